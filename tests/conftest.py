"""Makes the repository root importable as the package ``inversion_suite`` (as ComfyUI imports it under
whatever folder name it has), without installing anything."""
import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

if "inversion_suite" not in sys.modules:
    spec = importlib.util.spec_from_file_location("inversion_suite", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["inversion_suite"] = module
    spec.loader.exec_module(module)
