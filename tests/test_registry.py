import pytest

from mvm.registry import Registry


def test_register_build_and_errors():
    reg: Registry[int] = Registry("thing")
    reg.register("two")(lambda scale=1: 2 * scale)
    assert reg.build("two", scale=3) == 6
    assert "two" in reg and reg.names() == ["two"]
    with pytest.raises(KeyError, match="unknown thing 'three'; known: two"):
        reg.get("three")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("two")(lambda: 0)
