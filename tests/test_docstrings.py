"""numpydoc validation of the public API: every parameter documented, no unknown ones, and a
Returns section wherever something is returned.

The objects checked are computed, so a new public name or method is covered as soon as it
exists: everything in ``dreamjit.__all__``, the public methods of each public class
(``DreamPool``'s included), and ``dreamjit.testing``.
"""

import enum
import inspect

import numpydoc.validate as numpydoc_validate  # in the test extra
import pytest

import dreamjit
import dreamjit.testing

#: numpydoc checks enforced (numpydoc.validate.ERROR_MSGS has the full list)
CHECKS = {
    "GL08": "no docstring",
    "PR01": "a parameter is not documented",
    "PR02": "a documented parameter does not exist",
    "PR03": "parameters documented in another order than the signature's",
    "PR07": "a parameter has no description",
    "RT01": "no Returns section, though the function returns something",
    "RT03": "a return value has no description",
    "YD01": "no Yields section, though the function yields",
}
#: checks about constructor parameters, skipped for classes whose constructor is inherited
#: (documented at the base) and for enums (their call signature is Enum's)
CONSTRUCTOR_CHECKS = {"PR01", "PR02", "PR03", "PR07"}


class RecordValidator(numpydoc_validate.Validator):
    """numpydoc's validator, except that a class with no Parameters section may document
    its constructor's parameters as Attributes (record types: dataclasses, named tuples)."""

    def __init__(self, obj_name):
        obj = numpydoc_validate.Validator._load_obj(obj_name)
        super().__init__(numpydoc_validate.get_doc_object(obj))

    @property
    def doc_all_parameters(self):
        params = super().doc_all_parameters
        if inspect.isclass(self.obj) and not params:
            # numpydoc lists a class's properties as Attributes too: keep the fields
            fields = set(self.signature_parameters)
            attributes = self._doc_parameters(["Attributes"])
            params = type(params)((k, v) for k, v in attributes.items() if k in fields)
        return params


def _is_method(cls, name: str) -> bool:
    static = inspect.getattr_static(cls, name)
    if isinstance(static, (classmethod, staticmethod)):
        static = static.__func__
    module = getattr(static, "__module__", "") or ""
    return inspect.isfunction(static) and module.startswith("dreamjit")


def public_objects() -> list[str]:
    """Dotted names of the public functions, classes and methods."""
    names = []
    for module, public in (
        (dreamjit, dreamjit.__all__),
        (dreamjit.testing, dreamjit.testing.__all__),
    ):
        for name in public:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or callable(obj)):
                continue  # constants such as dreamjit.testing.PHOTO_NAMES
            dotted = f"{module.__name__}.{name}"
            names.append(dotted)
            if inspect.isclass(obj):
                names += [
                    f"{dotted}.{m}"
                    for m in dir(obj)
                    if not m.startswith("_") and _is_method(obj, m)
                ]
    return sorted(set(names))


def _own_constructor(cls) -> bool:
    if issubclass(cls, enum.Enum):
        return False
    return "__init__" in vars(cls) or "__new__" in vars(cls)


def findings(dotted: str) -> list[str]:
    obj = numpydoc_validate.Validator._load_obj(dotted)
    if not inspect.isclass(obj):
        skip = set()
    elif _own_constructor(obj):
        skip = {"PR03"}  # a class may document its constructor's parameters by topic
    else:
        skip = CONSTRUCTOR_CHECKS
    result = numpydoc_validate.validate(dotted, validator_cls=RecordValidator)
    return [
        f"{code}: {msg}" for code, msg in result["errors"] if code in CHECKS and code not in skip
    ]


def test_the_public_api_is_found():
    names = public_objects()
    assert "dreamjit.DreamPool.add_batch" in names and "dreamjit.evaluate" in names
    assert "dreamjit.testing.assert_pool_invariants" in names


@pytest.mark.parametrize("dotted", public_objects())
def test_docstring(dotted):
    assert findings(dotted) == [], dotted
