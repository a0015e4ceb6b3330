"""The plugin look-up's quick pre-check: it may only skip importlib.metadata when that would find nothing."""

import sys
import zipfile
from importlib.metadata import entry_points

from qcompile.backends import registry


def dist(site, name: str, entry_points_txt: str | None) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    if entry_points_txt is not None:
        (info / "entry_points.txt").write_text(entry_points_txt)


def test_agrees_with_importlib_metadata_here():
    found = entry_points(group=registry.ENTRY_POINT_GROUP)
    assert registry._may_have_plugins() or not found


def only_the_path_finder(monkeypatch) -> None:
    """The finders that search sys.path (the stdlib's, or importlib_metadata's once deepspeed imported it)."""
    kept = [f for f in sys.meta_path if not hasattr(f, "find_distributions") or registry._searches_sys_path(f)]
    monkeypatch.setattr(sys, "meta_path", kept)


def test_a_distribution_declaring_the_group_is_seen(tmp_path, monkeypatch):
    only_the_path_finder(monkeypatch)
    for site in (tmp_path / "without", tmp_path / "with"):  # two folders: importlib.metadata caches a listing
        dist(site, "other", "[console_scripts]\nother = other:main\n")
        dist(site, "no_entry_points", None)
    dist(tmp_path / "with", "relay", "[qcompile.backends]\nrelay = relay:BACKEND\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "without")])
    assert registry._may_have_plugins() is False
    assert not entry_points(group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "with")])
    assert registry._may_have_plugins() is True
    assert [e.name for e in entry_points(group=registry.ENTRY_POINT_GROUP)] == ["relay"]


def test_what_it_cannot_read_quickly_goes_to_importlib_metadata(tmp_path, monkeypatch):
    only_the_path_finder(monkeypatch)
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("relay-1.0.dist-info/entry_points.txt", "[qcompile.backends]\nrelay = relay:BACKEND\n")
    monkeypatch.setattr(sys, "path", [str(archive)])
    assert registry._may_have_plugins() is True

    class Finder:
        @staticmethod
        def find_distributions(context=None):
            return iter(())

    monkeypatch.setattr(sys, "path", [str(tmp_path / "missing")])
    assert registry._may_have_plugins() is False
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder])
    assert registry._may_have_plugins() is True
