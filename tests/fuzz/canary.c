/* A deliberately broken extension module: the sanitizer tests run it first, so that a
 * setup which would miss a bug (the runtime not preloaded, the interpreter's allocator
 * hiding objects from ASan, UBSan recovering) fails loudly instead of passing quietly.
 * Each function has exactly one bug, of a kind exporter/_lines.c could have. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>

/* Reads one byte past the end of a bytes object (past its trailing NUL): a heap
 * overflow that only ASan sees, and only when the object comes from malloc. */
static PyObject *read_past_end(PyObject *self, PyObject *arg) {
    (void)self;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "bytes expected");
        return NULL;
    }
    const volatile char *data = PyBytes_AS_STRING(arg);
    return PyLong_FromLong(data[PyBytes_GET_SIZE(arg) + 1]);
}

/* INT_MAX + n: a signed overflow for n > 0, which UBSan reports. */
static PyObject *overflow(PyObject *self, PyObject *arg) {
    (void)self;
    volatile int n = (int)PyLong_AsLong(arg);
    int sum = INT_MAX + n;
    return PyLong_FromLong(sum);
}

/* A double out of int64's range converted to it (float-cast-overflow, outside gcc's
 * "undefined" group). */
static PyObject *to_int(PyObject *self, PyObject *arg) {
    (void)self;
    volatile double d = PyFloat_AsDouble(arg);
    long long n = (long long)d;
    return PyLong_FromLongLong(n);
}

static PyMethodDef methods[] = {
    {"read_past_end", read_past_end, METH_O, NULL},
    {"overflow", overflow, METH_O, NULL},
    {"to_int", to_int, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_canary", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__canary(void) { return PyModule_Create(&module); }
