"""The generated train.py's source, as plain Python modules ("script parts").

`core` is in every job; each backend names the other parts it needs (`script_parts`). Here they import
each other like any package, so ruff and the tests read them directly; `compiler/render.py` joins a
job's parts into one self-contained train.py."""
