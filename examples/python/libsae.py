"""libsae from Python: ctypes bindings with numpy arrays.

    import numpy as np
    import libsae

    lib = libsae.load()                  # $LIBSAE_PATH, or libsae.so.0 on the loader path
    model = libsae.Model(d_in=64, d_sae=512, seed=1)
    opt = libsae.Optimizer(model, lr=1e-3, l1_coeff=0.1)
    for x in batches:                    # x: (n, 64) array, converted to float32
        losses = opt.step(model, x)      # Losses(loss, l2, l1, l0) before the update
    f = model.encode(x)                  # (n, 512) features
    w_dec = model.get(libsae.W_DEC)      # (512, 64) copy of the decoder
    model.save("ckpt"); opt.save("ckpt") # an existing directory: SAELens opens it
    model = libsae.Model.load("ckpt")    # ... and training resumes bit for bit
    opt = libsae.Optimizer.load(model, "ckpt")

A failing libsae call raises SAEError, which carries the status code
(e.status, e.g. libsae.E_INVALID_ARG) and the library's own description of it.
Arrays with the wrong shape raise ValueError before reaching the library.
Needs numpy (Debian: python3-numpy).
"""

import ctypes
import ctypes.util
import os
from collections import namedtuple

import numpy as np

# Status codes (pinned in sae.h)
OK, E_INVALID_ARG, E_NOMEM, E_NONFINITE, E_IO, E_FORMAT, E_STATE = 0, -1, -2, -3, -4, -5, -6
# Tensor selectors
W_ENC, B_ENC, W_DEC, B_DEC = 0, 1, 2, 3
# Optimizer options
OPT_LR, OPT_BETA1, OPT_BETA2, OPT_EPS, OPT_L1_COEFF, OPT_GRAD_CLIP = 1, 2, 3, 4, 5, 6

Losses = namedtuple("Losses", "loss l2 l1 l0")


class SAEError(Exception):
    """A libsae call failed: .status is the SAE_E_* code, str() describes it."""

    def __init__(self, status, call, description):
        super().__init__(f"{call}: {description}")
        self.status = status
        self.call = call
        self.description = description


class _Losses(ctypes.Structure):
    _fields_ = [("loss", ctypes.c_double), ("l2", ctypes.c_double),
                ("l1", ctypes.c_double), ("l0", ctypes.c_double)]


_c_model_p = ctypes.c_void_p
_c_opt_p = ctypes.c_void_p
_c_float_p = ctypes.POINTER(ctypes.c_float)
_size = ctypes.c_size_t
_int = ctypes.c_int

# name: (restype, argtypes)
_SIGNATURES = {
    "sae_version_string": (ctypes.c_char_p, []),
    "sae_status_string": (ctypes.c_char_p, [_int]),
    "sae_model_create": (_int, [ctypes.POINTER(_c_model_p), _size, _size, ctypes.c_uint64]),
    "sae_model_free": (None, [_c_model_p]),
    "sae_model_d_in": (_size, [_c_model_p]),
    "sae_model_d_sae": (_size, [_c_model_p]),
    "sae_model_tensor_size": (_size, [_c_model_p, _int]),
    "sae_model_get_tensor": (_int, [_c_model_p, _int, _c_float_p, _size]),
    "sae_model_set_tensor": (_int, [_c_model_p, _int, _c_float_p, _size]),
    "sae_encode": (_int, [_c_model_p, _c_float_p, _size, _c_float_p]),
    "sae_decode": (_int, [_c_model_p, _c_float_p, _size, _c_float_p]),
    "sae_loss": (_int, [_c_model_p, _c_float_p, _size, ctypes.c_double, ctypes.POINTER(_Losses)]),
    "sae_fvu": (_int, [_c_model_p, _c_float_p, _size, ctypes.POINTER(ctypes.c_double)]),
    "sae_optimizer_create": (_int, [ctypes.POINTER(_c_opt_p), _c_model_p]),
    "sae_optimizer_free": (None, [_c_opt_p]),
    "sae_optimizer_set": (_int, [_c_opt_p, _int, ctypes.c_double]),
    "sae_optimizer_get": (_int, [_c_opt_p, _int, ctypes.POINTER(ctypes.c_double)]),
    "sae_optimizer_steps": (ctypes.c_uint64, [_c_opt_p]),
    "sae_step": (_int, [_c_model_p, _c_opt_p, _c_float_p, _size, ctypes.POINTER(_Losses)]),
    "sae_optimizer_tokens_since_fired": (_int, [_c_opt_p, ctypes.POINTER(ctypes.c_uint64), _size]),
    "sae_optimizer_dead_count": (_int, [_c_opt_p, ctypes.c_uint64, ctypes.POINTER(_size)]),
    "sae_model_save": (_int, [_c_model_p, ctypes.c_char_p]),
    "sae_model_load": (_int, [ctypes.POINTER(_c_model_p), ctypes.c_char_p]),
    "sae_optimizer_save": (_int, [_c_opt_p, ctypes.c_char_p]),
    "sae_optimizer_load": (_int, [ctypes.POINTER(_c_opt_p), _c_model_p, ctypes.c_char_p]),
}

_lib = None


def load(path=None):
    """Load libsae (once) and return the ctypes library.

    path, else $LIBSAE_PATH, else whatever the dynamic loader finds as
    libsae.so.0 (an installed libsae)."""
    global _lib
    if _lib is not None and path is None:
        return _lib
    path = path or os.environ.get("LIBSAE_PATH") or ctypes.util.find_library("sae") or "libsae.so.0"
    lib = ctypes.CDLL(path)
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    _lib = lib
    return lib


def status_string(status):
    """The library's description of a status code."""
    return load().sae_status_string(status).decode()


def version():
    return load().sae_version_string().decode()


def _check(status, call):
    if status != OK:
        raise SAEError(status, call, status_string(status))


def _rows(x, width, what):
    """x as a C-contiguous float32 (n, width) array (a copy only if needed)."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 2 or a.shape[1] != width:
        raise ValueError(f"{what} must have shape (n, {width}), got {np.shape(x)}")
    return a


def _ptr(a):
    return a.ctypes.data_as(_c_float_p)


class Model:
    """A ReLU SAE (sae_model). Tensors come back as numpy arrays in SAELens
    layout: W_ENC (d_in, d_sae), B_ENC (d_sae,), W_DEC (d_sae, d_in), B_DEC (d_in,)."""

    def __init__(self, d_in, d_sae, seed=0):
        self._lib = load()
        handle = _c_model_p()
        _check(self._lib.sae_model_create(ctypes.byref(handle), d_in, d_sae, seed), "sae_model_create")
        self._handle = handle

    @classmethod
    def load(cls, path):
        """A model from a safetensors file, or from a directory holding
        sae_weights.safetensors (libsae's or SAELens's) (sae_model_load)."""
        lib = load()
        handle = _c_model_p()
        _check(lib.sae_model_load(ctypes.byref(handle), os.fsencode(path)), "sae_model_load")
        model = cls.__new__(cls)
        model._lib, model._handle = lib, handle
        return model

    def save(self, path):
        """Save atomically (sae_model_save): into an existing directory as
        sae_weights.safetensors + cfg.json, which SAELens's SAE.load_from_disk
        opens; any other path is a single safetensors file."""
        _check(self._lib.sae_model_save(self._handle, os.fsencode(path)), "sae_model_save")

    def close(self):
        if getattr(self, "_handle", None):
            self._lib.sae_model_free(self._handle)
            self._handle = None

    __del__ = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def d_in(self):
        return self._lib.sae_model_d_in(self._handle)

    @property
    def d_sae(self):
        return self._lib.sae_model_d_sae(self._handle)

    def _shape(self, which):
        return {W_ENC: (self.d_in, self.d_sae), B_ENC: (self.d_sae,),
                W_DEC: (self.d_sae, self.d_in), B_DEC: (self.d_in,)}[which]

    def get(self, which):
        """A copy of tensor `which` (W_ENC, B_ENC, W_DEC or B_DEC)."""
        out = np.empty(self._shape(which), dtype=np.float32)
        _check(self._lib.sae_model_get_tensor(self._handle, which, _ptr(out), out.size),
               "sae_model_get_tensor")
        return out

    def set(self, which, values):
        a = np.ascontiguousarray(values, dtype=np.float32)
        if a.shape != self._shape(which):
            raise ValueError(f"tensor {which} must have shape {self._shape(which)}, got {a.shape}")
        _check(self._lib.sae_model_set_tensor(self._handle, which, _ptr(a), a.size),
               "sae_model_set_tensor")

    def weights(self):
        """All four tensors, as a dict of arrays."""
        return {name: self.get(w) for name, w in
                (("W_enc", W_ENC), ("b_enc", B_ENC), ("W_dec", W_DEC), ("b_dec", B_DEC))}

    def encode(self, x):
        """f = ReLU((x - b_dec) W_enc + b_enc) for x of shape (n, d_in)."""
        x = _rows(x, self.d_in, "x")
        f = np.empty((x.shape[0], self.d_sae), dtype=np.float32)
        _check(self._lib.sae_encode(self._handle, _ptr(x), x.shape[0], _ptr(f)), "sae_encode")
        return f

    def decode(self, f):
        """x_hat = f W_dec + b_dec for f of shape (n, d_sae)."""
        f = _rows(f, self.d_sae, "f")
        x_hat = np.empty((f.shape[0], self.d_in), dtype=np.float32)
        _check(self._lib.sae_decode(self._handle, _ptr(f), f.shape[0], _ptr(x_hat)), "sae_decode")
        return x_hat

    def loss(self, x, l1_coeff):
        x = _rows(x, self.d_in, "x")
        out = _Losses()
        _check(self._lib.sae_loss(self._handle, _ptr(x), x.shape[0], l1_coeff, ctypes.byref(out)),
               "sae_loss")
        return Losses(out.loss, out.l2, out.l1, out.l0)

    def fvu(self, x):
        """Fraction of variance unexplained on x (n >= 2 rows)."""
        x = _rows(x, self.d_in, "x")
        out = ctypes.c_double()
        _check(self._lib.sae_fvu(self._handle, _ptr(x), x.shape[0], ctypes.byref(out)), "sae_fvu")
        return out.value


class Optimizer:
    """Adam for models shaped like `model` (sae_optimizer). Keyword options:
    lr, beta1, beta2, eps, l1_coeff, grad_clip."""

    _OPTIONS = {"lr": OPT_LR, "beta1": OPT_BETA1, "beta2": OPT_BETA2, "eps": OPT_EPS,
                "l1_coeff": OPT_L1_COEFF, "grad_clip": OPT_GRAD_CLIP}

    def __init__(self, model, **options):
        self._lib = load()
        handle = _c_opt_p()
        _check(self._lib.sae_optimizer_create(ctypes.byref(handle), model._handle),
               "sae_optimizer_create")
        self._handle = handle
        self.d_sae = model.d_sae
        for name, value in options.items():
            if name not in self._OPTIONS:
                self.close()
                raise TypeError(f"unknown option {name!r}")
            self.set(self._OPTIONS[name], value)

    @classmethod
    def load(cls, model, path):
        """The optimizer saved at path (a file, or a directory holding
        optimizer.safetensors) for models shaped like `model`: moments, step
        count and options, so that training resumes bit for bit."""
        lib = load()
        handle = _c_opt_p()
        _check(lib.sae_optimizer_load(ctypes.byref(handle), model._handle, os.fsencode(path)),
               "sae_optimizer_load")
        opt = cls.__new__(cls)
        opt._lib, opt._handle, opt.d_sae = lib, handle, model.d_sae
        return opt

    def save(self, path):
        """Save atomically (sae_optimizer_save): a file, or optimizer.safetensors
        in an existing directory (beside the model's files)."""
        _check(self._lib.sae_optimizer_save(self._handle, os.fsencode(path)), "sae_optimizer_save")

    def close(self):
        if getattr(self, "_handle", None):
            self._lib.sae_optimizer_free(self._handle)
            self._handle = None

    __del__ = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set(self, option, value):
        _check(self._lib.sae_optimizer_set(self._handle, option, value), "sae_optimizer_set")

    def get(self, option):
        out = ctypes.c_double()
        _check(self._lib.sae_optimizer_get(self._handle, option, ctypes.byref(out)), "sae_optimizer_get")
        return out.value

    def step(self, model, x):
        """One training step on x (n, d_in); the Losses before the update."""
        x = _rows(x, model.d_in, "x")
        out = _Losses()
        _check(self._lib.sae_step(model._handle, self._handle, _ptr(x), x.shape[0], ctypes.byref(out)),
               "sae_step")
        return Losses(out.loss, out.l2, out.l1, out.l0)

    @property
    def steps(self):
        return self._lib.sae_optimizer_steps(self._handle)

    def tokens_since_fired(self):
        """Per feature, the training tokens since it last fired (uint64 array)."""
        out = np.empty(self.d_sae, dtype=np.uint64)
        _check(self._lib.sae_optimizer_tokens_since_fired(
            self._handle, out.ctypes.data_as(ctypes.POINTER(ctypes.c_uint64)), out.size),
            "sae_optimizer_tokens_since_fired")
        return out

    def dead_count(self, window_tokens):
        """Features that fired on none of the last window_tokens training tokens."""
        out = _size()
        _check(self._lib.sae_optimizer_dead_count(self._handle, window_tokens, ctypes.byref(out)),
               "sae_optimizer_dead_count")
        return out.value
