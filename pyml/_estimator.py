"""The scikit-learn estimator protocol without importing scikit-learn (it costs ~0.6 s at
``import pyml``): parameters (get_params / set_params, so clone and GridSearchCV work), repr,
tags, feature names, ``set_output`` and the not-fitted error.

scikit-learn's own classes are used where scikit-learn is already imported (then the user's
``except NotFittedError`` or warning filter on ``ConvergenceWarning`` sees the class it
names); scikit-learn is never imported here except inside ``__sklearn_tags__``, which only
scikit-learn calls.
"""
from __future__ import annotations

import inspect
import sys
from typing import Any

import numpy as np


class _NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit`` (scikit-learn's NotFittedError when it is loaded)."""


class _ConvergenceWarning(UserWarning):
    """A fit found a degenerate solution (scikit-learn's ConvergenceWarning when it is loaded)."""


def _sklearn_exception(name: str, fallback: type) -> type:
    mod = sys.modules.get("sklearn.exceptions")
    return getattr(mod, name, fallback) if mod is not None else fallback


def not_fitted_error() -> type:
    return _sklearn_exception("NotFittedError", _NotFittedError)


def convergence_warning() -> type:
    return _sklearn_exception("ConvergenceWarning", _ConvergenceWarning)


def feature_names(X: Any) -> np.ndarray | None:
    """The column names of a DataFrame when all are strings (scikit-learn's rule), else None."""
    cols = getattr(X, "columns", None)
    if cols is None or not hasattr(X, "shape") or len(getattr(X, "shape", ())) != 2:
        return None
    names = np.asarray(list(cols), dtype=object)
    strs = [isinstance(c, str) for c in names]
    if names.size and all(strs):
        return names
    if any(strs):
        raise TypeError("Feature names are only supported if all input features have string names, "
                        f"but your input has {sorted({type(c).__name__ for c in names})} as feature "
                        "name / column name types. Convert all names to str to use feature names.")
    return None


def _name_list(names) -> str:
    shown = [f"- {n}\n" for n in list(names)[:5]]
    return "".join(shown) + ("- ...\n" if len(names) > 5 else "")


def check_feature_names(est: Any, X: Any, *, reset: bool) -> None:
    """Set ``feature_names_in_`` (reset) or check X's names against it, with scikit-learn's
    warnings and error messages."""
    import warnings

    names = feature_names(X)
    if reset:
        if names is not None:
            est.feature_names_in_ = names
        elif hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
        return
    fitted = getattr(est, "feature_names_in_", None)
    cls = type(est).__name__
    if fitted is None and names is None:
        return
    if fitted is None:
        warnings.warn(f"X has feature names, but {cls} was fitted without feature names", stacklevel=3)
        return
    if names is None:
        warnings.warn(f"X does not have valid feature names, but {cls} was fitted with feature names",
                      stacklevel=3)
        return
    if len(fitted) == len(names) and np.all(fitted == names):
        return
    msg = "The feature names should match those that were passed during fit.\n"
    unexpected = sorted(set(names) - set(fitted))
    missing = sorted(set(fitted) - set(names))
    if unexpected:
        msg += "Feature names unseen at fit time:\n" + _name_list(unexpected)
    if missing:
        msg += "Feature names seen at fit time, yet now missing:\n" + _name_list(missing)
    if not unexpected and not missing:
        msg += "Feature names must be in the same order as they were in fit.\n"
    raise ValueError(msg)


class Estimator:
    """get_params / set_params / repr / set_output as scikit-learn's BaseEstimator has them."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values()
                      if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self._param_names():
            value = getattr(self, key)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{key}__{k}", v) for k, v in value.get_params().items())
            out[key] = value
        return out

    def set_params(self, **params):
        if not params:
            return self
        valid = self.get_params(deep=True)
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            key, delim, sub = key.partition("__")
            if key not in valid:
                raise ValueError(f"Invalid parameter {key!r} for estimator {self}. "
                                 f"Valid parameters are: {self._param_names()!r}.")
            if delim:
                nested.setdefault(key, {})[sub] = value
            else:
                setattr(self, key, value)
                valid[key] = value
        for key, sub in nested.items():
            valid[key].set_params(**sub)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        shown = []
        for key in self._param_names():
            value = getattr(self, key, None)
            default = defaults.get(key, inspect.Parameter.empty)
            same = value is default or (isinstance(value, str) and value == default) or (
                type(value) in (int, float, bool) and type(default) is type(value) and value == default)
            if not same:
                shown.append(f"{key}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    # ------------------------------------------------------------------ set_output
    def set_output(self, *, transform: str | None = None):
        """Output container of ``transform`` / ``fit_transform``: "default" (NumPy), "pandas",
        "polars" or None (unchanged), as scikit-learn's ``set_output``."""
        if transform is None:
            return self
        if transform not in ("default", "pandas", "polars"):
            raise ValueError(f"transform must be 'default', 'pandas', 'polars' or None, got {transform!r}")
        self._sklearn_output_config = {"transform": transform}
        return self

    def _wrap_output(self, out: np.ndarray, X: Any):
        kind = getattr(self, "_sklearn_output_config", {}).get("transform", "default")
        if kind == "default":
            return out
        names = self.get_feature_names_out()
        if kind == "pandas":
            import pandas as pd

            index = X.index if hasattr(X, "index") and not callable(X.index) else None
            return pd.DataFrame(out, columns=list(names), index=index, copy=False)
        import polars as pl

        return pl.DataFrame(out, schema=list(names), orient="row")
