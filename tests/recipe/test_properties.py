"""Properties of recipe parsing over generated inputs: the duplicate-key check changes nothing else."""

import yaml
from hypothesis import given
from hypothesis import strategies as st

from nascli.recipe.load import apply_overrides, parse_overrides, safe_load

keys = st.text(st.characters(categories=("L", "N"), max_codepoint=0x24F), min_size=1, max_size=8)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
documents = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=12
)


@given(documents)
def test_documents_without_duplicate_keys_load_as_yaml_loads_them(document):
    text = yaml.safe_dump(document)
    assert safe_load(text) == yaml.safe_load(text)


def _flow(value) -> str:
    """``value`` as one line of YAML, as a user would type it after ``key=``."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("...\n").strip()


@given(st.lists(st.tuples(st.lists(keys, min_size=1, max_size=3), scalars), max_size=5))
def test_an_override_sets_the_value_it_names(pairs):
    data = {}
    for path, value in pairs:
        item = f"{'.'.join(path)}={_flow(value)}"
        (parsed_path, parsed_value), *_ = parse_overrides([item])
        assert parsed_path == path and parsed_value == value
        try:
            apply_overrides(data, [item])
        except ValueError:  # an earlier override made a prefix of this path a plain value
            continue
        node = data
        for part in path:
            node = node[part]
        assert node == value
