"""The README's spec reference is the one generated from the field descriptions."""

from qcompile.schemas.reference import markdown_reference
from tests.conftest import REPO


def test_readme_spec_reference_is_current():
    readme = (REPO / "README.md").read_text()
    section = readme.split("<!-- spec-reference:start -->\n")[1].split("<!-- spec-reference:end -->")[0]
    assert section == markdown_reference(), "regenerate with `qcompile schema --format markdown`"


def test_readme_quick_start_commands_exist_in_makefile():
    makefile = (REPO / "Makefile").read_text()
    assert "\nexample:" in makefile and "\ntest:" in makefile
