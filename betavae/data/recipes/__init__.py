"""The `betavae prepare` recipes: each lists the items of one source layout (see ``base``)."""
from __future__ import annotations

from types import ModuleType

from betavae.data.recipes import batik, cars, cats, celeba, folder

# Recipe name on the command line → module with a docstring (its --help), HELP, DEFAULTS (its own
# options), add_arguments(parser), list_items(source, options) -> Listing and write_example(root)
# -> a minimal source, from which tests/test_recipe_conformance.py builds every recipe.
RECIPES: dict[str, ModuleType] = {
    "folder": folder,
    "celeba": celeba,
    "stanford-cars": cars,
    "cat-faces": cats,
    "batik": batik,
}
