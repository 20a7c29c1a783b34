/*
 * numslab.drivers._gate: the facade's call gate, from Python straight to the engine's units.
 *
 * One Gate per SlabAllocator. Its methods are the facade's hot calls (kmem_cache_alloc,
 * kmem_cache_free, kmalloc, kfree and the bulk and array calls), installed on the allocator
 * instance so that `sa.kmem_cache_alloc(c)` runs no Python bytecode. Each method checks that
 * its arguments are exactly what the common case takes (a KmemCache of this allocator, plain
 * ints, the calling thread's CPU, a writable contiguous 1-D int64 ndarray holding `nr`
 * entries: every call, since an array can be reshaped or retyped in place) and calls the
 * unit through the engine's unit table. Anything else, and every error, goes to the
 * allocator's Python method of the same name, which checks, formats and raises: the units
 * change nothing when they fail, so running the call again there gives the same answer.
 *
 * Calls hold the GIL, as the Python path does: the GIL serialises calls into an allocator.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

/* The leading fields of NumPy's PyArrayObject_fields (stable since NumPy 1.7). The Python
 * side checks them against a probe array before it builds a gate. */
typedef struct {
    PyObject_HEAD
    char *data;
    int nd;
    Py_ssize_t *dimensions;
    Py_ssize_t *strides;
    PyObject *base;
    PyObject *descr;
    int flags;
} ArrayHead;

#define NPY_C_CONTIGUOUS 0x0001
#define NPY_WRITEABLE 0x0400

/* Units are C functions of int64 arguments (the first the state's address). */
typedef int64_t i64;
typedef i64 (*unit3)(i64, i64, i64);
typedef i64 (*unit4)(i64, i64, i64, i64);
typedef i64 (*unit5)(i64, i64, i64, i64, i64);
typedef i64 (*unit6)(i64, i64, i64, i64, i64, i64);
typedef i64 (*unit7)(i64, i64, i64, i64, i64, i64, i64);

enum { U_ALLOC, U_FREE, U_KMALLOC, U_KFREE, U_ALLOC_BULK, U_FREE_BULK, U_ALLOC_ARRAY, NUNITS };

typedef struct {
    PyObject_HEAD
    PyObject *sa_ref;          /* a weak reference to the SlabAllocator (it holds the gate) */
    PyObject *keep;            /* what the state's address points into: kept alive */
    PyObject *error_type;      /* numslab.AllocatorGoneError */
    PyObject *cache_type;      /* KmemCache */
    PyObject *array_type;      /* numpy.ndarray */
    PyObject *int64_descr;     /* numpy.dtype(int64) */
    Py_ssize_t sa_offset;      /* offsets of KmemCache's __slots__ _sa and _id */
    Py_ssize_t id_offset;
    int64_t st;                /* the state's address */
    int64_t *table;            /* the unit table */
    int64_t *stubs;            /* each slot's stub (the table holds it until compiled) */
    PyObject *compile;         /* compile(slot): compile the unit of that slot */
    int64_t slots[NUNITS];     /* the units' slots */
    int64_t *ca;               /* the cache table (struct kmem_cache rows) */
    int64_t ca_ncols, ca_ctor;
    int64_t *g;                /* scalars: G_NPENDING says constructors are pending */
    int64_t g_npending;
    int64_t *kmalloc_cache;    /* cache id serving each kmalloc size 0..8192 */
    int64_t gfp_kernel;
    int64_t array_flags_all;
    uint64_t thread;           /* the last thread seen (its thread state's unique id) and CPU */
    int64_t cpu;
    int have_thread;
} Gate;

/* The unit's entry now: its compiled function, or the stub that compiles it first. */
#define UNIT(self, u, arity) ((arity)(intptr_t)(self)->table[(self)->slots[u]])

/* The allocator (a borrowed reference), or NULL with AllocatorGoneError set if it is gone. */
static PyObject *owner(Gate *self)
{
    PyObject *sa = PyWeakref_GetObject(self->sa_ref);
    if (sa == Py_None) {
        PyErr_SetString(self->error_type, "the allocator of this method no longer exists "
                        "(a method does not keep its allocator alive: keep the allocator in "
                        "a name, sa = numslab.SlabAllocator(...), then call sa.kmalloc(...))");
        return NULL;
    }
    return sa;
}

/* The calling thread's CPU, after checking that the allocator still exists: cached for the
 * last thread (by its thread state's id, which no later thread reuses, unlike the OS's
 * thread id), else asked of sa._cpu(). */
static int thread_cpu(Gate *self, int64_t *cpu)
{
    PyObject *sa = owner(self);
    if (sa == NULL)
        return -1;
    uint64_t t = PyThreadState_GetID(PyThreadState_Get());
    if (self->have_thread && self->thread == t) {
        *cpu = self->cpu;
        return 0;
    }
    PyObject *r = PyObject_CallMethod(sa, "_cpu", NULL);
    if (r == NULL)
        return -1;
    long long c = PyLong_AsLongLong(r);
    Py_DECREF(r);
    if (c == -1 && PyErr_Occurred())
        return -1;
    self->thread = t;
    self->cpu = c;
    self->have_thread = 1;
    *cpu = c;
    return 0;
}

/* The id of `c` if it is exactly a KmemCache of this allocator, else -1. */
static int64_t cache_id(Gate *self, PyObject *c)
{
    if ((PyObject *)Py_TYPE(c) != self->cache_type)
        return -1;
    PyObject *sa = *(PyObject **)((char *)c + self->sa_offset);
    PyObject *id = *(PyObject **)((char *)c + self->id_offset);
    if (sa != PyWeakref_GetObject(self->sa_ref) || id == NULL || !PyLong_CheckExact(id))
        return -1;
    long long v = PyLong_AsLongLong(id);
    if (v < 0) {
        PyErr_Clear();
        return -1;
    }
    return v;
}

/* Compile the gate's unit `u` if the table still holds its stub: compiling runs Python,
 * where other threads run (a destroy among them), so it comes before the cache id is read;
 * and here a failure (a Ctrl-C) raises, where the stub, a ctypes callback, cannot.
 * (The stub would compile it too, on the call, after the id was read: the engine was given
 * a cache destroyed meanwhile, and the interpreter's heap was corrupted.) */
static int ready(Gate *self, int u)
{
    int64_t slot = self->slots[u];
    if (self->table[slot] != self->stubs[slot])
        return 0;
    PyObject *r = PyObject_CallFunction(self->compile, "L", (long long)slot);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* GFP flags: an int in 0..2**32-1 (else the Python method refuses it). */
#define GFP_OK(gfp) ((gfp) >= 0 && (gfp) < ((int64_t)1 << 32))

/* A plain int argument (exactly int, within int64), or -1 with *ok = 0. */
static int64_t plain_int(PyObject *o, int *ok)
{
    if (!PyLong_CheckExact(o)) {
        *ok = 0;
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        *ok = 0;
        return -1;
    }
    return v;
}

/* The address of `a` if it is a writable C-contiguous 1-D int64 ndarray of at least `nr`
 * entries (and `nr` >= 0), else 0. */
static int64_t object_array(Gate *self, PyObject *a, int64_t nr)
{
    if ((PyObject *)Py_TYPE(a) != self->array_type)
        return 0;
    ArrayHead *h = (ArrayHead *)a;
    if (h->descr != self->int64_descr || h->nd != 1 ||
            (h->flags & (NPY_C_CONTIGUOUS | NPY_WRITEABLE)) != (NPY_C_CONTIGUOUS | NPY_WRITEABLE) ||
            nr < 0 || nr > h->dimensions[0] || h->data == NULL)
        return 0;
    return (int64_t)(intptr_t)h->data;
}

/* The Python method `name` of the allocator, called with the same arguments. */
static PyObject *python_path(Gate *self, const char *name, PyObject *const *args,
                             Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *sa = owner(self);
    if (sa == NULL)
        return NULL;
    PyObject *m = PyObject_GetAttrString((PyObject *)Py_TYPE(sa), name);
    if (m == NULL)
        return NULL;
    PyObject *stack[8], **full = stack;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw + 1 > 8 && (full = PyMem_Malloc((nargs + nkw + 1) * sizeof(PyObject *))) == NULL) {
        Py_DECREF(m);
        return PyErr_NoMemory();
    }
    full[0] = sa;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++)
        full[i + 1] = args[i];
    PyObject *r = PyObject_Vectorcall(m, full, nargs + 1, kwnames);
    if (full != stack)
        PyMem_Free(full);
    Py_DECREF(m);
    return r;
}

/* sa.<name>(...) for the Python side's end of an allocation. */
static PyObject *finish(Gate *self, const char *name, const char *format, PyObject *cache,
                        long long a, long long b, long long c, const char *fn)
{
    PyObject *sa = owner(self);
    if (sa == NULL)
        return NULL;
    if (fn == NULL)
        return PyObject_CallMethod(sa, name, format, cache, a, b, (int)c);
    return PyObject_CallMethod(sa, name, format, cache, a, b, c, fn);
}

/* Constructors of new slabs are pending, or the cache has one: the Python side finishes. */
static int needs_python(Gate *self, int64_t cid)
{
    return self->g[self->g_npending] != 0 ||
        (cid >= 0 && self->ca[cid * self->ca_ncols + self->ca_ctor] != 0);
}

/* A cache with a constructor is allocated from by the Python method alone: it holds the
 * allocator's constructor lock from the engine's call until the new slabs are constructed,
 * so no other thread can be handed an object before its constructor ran. */
static int has_ctor(Gate *self, int64_t cid)
{
    return self->ca[cid * self->ca_ncols + self->ca_ctor] != 0;
}

#define SLOW(name) return python_path(self, name, args, nargs, kwnames)

/* kmem_cache_alloc(cache, gfp=GFP_KERNEL, cpu=None) */
static PyObject *g_alloc(Gate *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int ok = 1;
    int64_t cpu, gfp = self->gfp_kernel;
    if (kwnames || nargs < 1 || nargs > 3 || (nargs == 3 && args[2] != Py_None))
        SLOW("kmem_cache_alloc");
    if (thread_cpu(self, &cpu))       /* first: it may run Python (sa._cpu()), and another */
        return NULL;                  /* thread's destroy then made a cache id read before it stale */
    if (ready(self, U_ALLOC))
        return NULL;
    int64_t cid = cache_id(self, args[0]);
    if (nargs >= 2)
        gfp = plain_int(args[1], &ok);
    if (cid < 0 || !ok || !GFP_OK(gfp) || has_ctor(self, cid))
        SLOW("kmem_cache_alloc");
    int64_t addr = UNIT(self, U_ALLOC, unit5)(self->st, cid, cpu, (int64_t)-1, gfp);
    if (addr == 0 || needs_python(self, cid))
        return finish(self, "_after_alloc", "OLLi", args[0], addr, gfp, -1, NULL);
    return PyLong_FromLongLong(addr);
}

/* kmem_cache_free(cache, addr, cpu=None) */
static PyObject *g_free(Gate *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int ok = 1;
    int64_t cpu;
    if (kwnames || nargs < 2 || nargs > 3 || (nargs == 3 && args[2] != Py_None))
        SLOW("kmem_cache_free");
    if (thread_cpu(self, &cpu))       /* before the id is read (see g_alloc) */
        return NULL;
    if (ready(self, U_FREE))
        return NULL;
    int64_t cid = cache_id(self, args[0]);
    int64_t addr = plain_int(args[1], &ok);
    if (cid < 0 || !ok)
        SLOW("kmem_cache_free");
    if (UNIT(self, U_FREE, unit4)(self->st, cid, cpu, addr) != 0)
        SLOW("kmem_cache_free");              /* nothing changed: it raises the error */
    Py_RETURN_NONE;
}

/* kmalloc(size, gfp=GFP_KERNEL, cpu=None, node=-1) */
static PyObject *g_kmalloc(Gate *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    int ok = 1;
    int64_t cpu, gfp = self->gfp_kernel;
    if (kwnames || nargs < 1 || nargs > 4 || (nargs >= 3 && args[2] != Py_None))
        SLOW("kmalloc");
    int64_t size = plain_int(args[0], &ok);
    if (nargs >= 2)
        gfp = plain_int(args[1], &ok);
    if (nargs == 4 && plain_int(args[3], &ok) != -1)
        ok = 0;
    if (!ok || size <= 0 || size > 8192 || !GFP_OK(gfp))
        SLOW("kmalloc");
    if (thread_cpu(self, &cpu))
        return NULL;
    if (ready(self, U_KMALLOC))
        return NULL;
    int64_t cid = self->kmalloc_cache[size];
    int64_t addr = UNIT(self, U_KMALLOC, unit7)(self->st, cid, cpu, (int64_t)-1, gfp, size,
                                         (int64_t)0);
    if (addr == 0 || needs_python(self, -1)) {
        PyObject *sa = owner(self);
        if (sa == NULL)
            return NULL;
        return PyObject_CallMethod(sa, "_after_kmalloc", "LLLL", (long long)addr,
                                   (long long)gfp, (long long)cpu, (long long)size);
    }
    return PyLong_FromLongLong(addr);
}

/* kfree(addr, cpu=None) */
static PyObject *g_kfree(Gate *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int ok = 1;
    int64_t cpu;
    if (kwnames || nargs < 1 || nargs > 2 || (nargs == 2 && args[1] != Py_None))
        SLOW("kfree");
    int64_t addr = plain_int(args[0], &ok);
    if (!ok)
        SLOW("kfree");
    if (addr >= 0 && addr <= 16)                /* ZERO_OR_NULL_PTR: NULL to ZERO_SIZE_PTR */
        Py_RETURN_NONE;
    if (thread_cpu(self, &cpu))
        return NULL;
    if (ready(self, U_KFREE))
        return NULL;
    if (UNIT(self, U_KFREE, unit3)(self->st, cpu, addr) != 0)
        SLOW("kfree");
    Py_RETURN_NONE;
}

/* kmem_cache_alloc_bulk(cache, gfp, nr, out, cpu=None) */
static PyObject *g_alloc_bulk(Gate *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    int ok = 1;
    int64_t cpu;
    if (kwnames || nargs < 4 || nargs > 5 || (nargs == 5 && args[4] != Py_None))
        SLOW("kmem_cache_alloc_bulk");
    if (thread_cpu(self, &cpu))       /* before the id is read (see g_alloc) */
        return NULL;
    if (ready(self, U_ALLOC_BULK))
        return NULL;
    int64_t cid = cache_id(self, args[0]);
    int64_t gfp = plain_int(args[1], &ok);
    int64_t nr = plain_int(args[2], &ok);
    if (cid < 0 || !ok || !GFP_OK(gfp) || has_ctor(self, cid))
        SLOW("kmem_cache_alloc_bulk");
    int64_t p = object_array(self, args[3], nr);
    if (p == 0)
        SLOW("kmem_cache_alloc_bulk");
    int64_t got = UNIT(self, U_ALLOC_BULK, unit6)(self->st, cid, cpu, gfp, nr, p);
    if (got <= 0 || needs_python(self, cid))
        return finish(self, "_bulk_done", "OLLLs", args[0], got, nr, gfp,
                      "kmem_cache_alloc_bulk");
    return PyLong_FromLongLong(got);
}

/* The bulk frees: kmem_cache_free_bulk(cache, nr, objs, cpu=None) and
 * kfree_bulk(nr, objs, cpu=None). */
static PyObject *free_bulk(Gate *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames, int with_cache, const char *name)
{
    int ok = 1;
    int64_t cpu, cid = -1;
    Py_ssize_t k = with_cache;
    if (kwnames || nargs < 2 + k || nargs > 3 + k || (nargs == 3 + k && args[2 + k] != Py_None))
        return python_path(self, name, args, nargs, kwnames);
    if (thread_cpu(self, &cpu))       /* before the id is read (see g_alloc) */
        return NULL;
    if (ready(self, U_FREE_BULK))
        return NULL;
    if (with_cache && (cid = cache_id(self, args[0])) < 0)
        return python_path(self, name, args, nargs, kwnames);
    int64_t nr = plain_int(args[k], &ok);
    int64_t p = ok ? object_array(self, args[k + 1], nr) : 0;
    if (p == 0)
        return python_path(self, name, args, nargs, kwnames);
    if (UNIT(self, U_FREE_BULK, unit5)(self->st, cid, cpu, nr, p) != 0)
        return python_path(self, name, args, nargs, kwnames);
    Py_RETURN_NONE;
}

static PyObject *g_free_bulk(Gate *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    return free_bulk(self, args, nargs, kwnames, 1, "kmem_cache_free_bulk");
}

static PyObject *g_free_array(Gate *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    return free_bulk(self, args, nargs, kwnames, 1, "kmem_cache_free_array");
}

static PyObject *g_kfree_bulk(Gate *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    return free_bulk(self, args, nargs, kwnames, 0, "kfree_bulk");
}

/* kmem_cache_alloc_array(cache, gfp, nr, out, flags=0, cpu=None) */
static PyObject *g_alloc_array(Gate *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    int ok = 1;
    int64_t cpu, flags = 0;
    if (kwnames || nargs < 4 || nargs > 6 || (nargs == 6 && args[5] != Py_None))
        SLOW("kmem_cache_alloc_array");
    if (thread_cpu(self, &cpu))       /* before the id is read (see g_alloc) */
        return NULL;
    if (ready(self, U_ALLOC_ARRAY))
        return NULL;
    int64_t cid = cache_id(self, args[0]);
    int64_t gfp = plain_int(args[1], &ok);
    int64_t nr = plain_int(args[2], &ok);
    if (nargs >= 5)
        flags = plain_int(args[4], &ok);
    if (cid < 0 || !ok || !GFP_OK(gfp) || (flags & ~self->array_flags_all) ||
        has_ctor(self, cid))
        SLOW("kmem_cache_alloc_array");
    int64_t p = object_array(self, args[3], nr);
    if (p == 0)
        SLOW("kmem_cache_alloc_array");
    int64_t got = UNIT(self, U_ALLOC_ARRAY, unit7)(self->st, cid, cpu, gfp, flags, nr, p);
    if (got <= 0 || needs_python(self, cid))
        return finish(self, "_bulk_done", "OLLLs", args[0], got, nr, gfp | 0x2000,
                      "kmem_cache_alloc_array");
    return PyLong_FromLongLong(got);
}

/* forget_thread(): the next call asks sa._cpu() again (after set_cpu). */
static PyObject *g_forget_thread(Gate *self, PyObject *unused)
{
    self->have_thread = 0;
    Py_RETURN_NONE;
}

static PyMethodDef gate_methods[] = {
    {"kmem_cache_alloc", (PyCFunction)(void (*)(void))g_alloc, METH_FASTCALL | METH_KEYWORDS,
     "kmem_cache_alloc($self, cache, gfp=3264, cpu=None)\n--\n\n"
     "SlabAllocator.kmem_cache_alloc, through the gate (gfp: GFP_KERNEL)."},
    {"kmem_cache_free", (PyCFunction)(void (*)(void))g_free, METH_FASTCALL | METH_KEYWORDS,
     "kmem_cache_free($self, cache, addr, cpu=None)\n--\n\n"
     "SlabAllocator.kmem_cache_free, through the gate."},
    {"kmalloc", (PyCFunction)(void (*)(void))g_kmalloc, METH_FASTCALL | METH_KEYWORDS,
     "kmalloc($self, size, gfp=3264, cpu=None, node=-1)\n--\n\n"
     "SlabAllocator.kmalloc, through the gate (gfp: GFP_KERNEL)."},
    {"kfree", (PyCFunction)(void (*)(void))g_kfree, METH_FASTCALL | METH_KEYWORDS,
     "kfree($self, addr, cpu=None)\n--\n\nSlabAllocator.kfree, through the gate."},
    {"kmem_cache_alloc_bulk", (PyCFunction)(void (*)(void))g_alloc_bulk,
     METH_FASTCALL | METH_KEYWORDS,
     "kmem_cache_alloc_bulk($self, cache, gfp, nr, out, cpu=None)\n--\n\n"
     "SlabAllocator.kmem_cache_alloc_bulk, through the gate."},
    {"kmem_cache_free_bulk", (PyCFunction)(void (*)(void))g_free_bulk,
     METH_FASTCALL | METH_KEYWORDS,
     "kmem_cache_free_bulk($self, cache, nr, objs, cpu=None)\n--\n\n"
     "SlabAllocator.kmem_cache_free_bulk, through the gate."},
    {"kfree_bulk", (PyCFunction)(void (*)(void))g_kfree_bulk, METH_FASTCALL | METH_KEYWORDS,
     "kfree_bulk($self, nr, objs, cpu=None)\n--\n\nSlabAllocator.kfree_bulk, through the gate."},
    {"kmem_cache_alloc_array", (PyCFunction)(void (*)(void))g_alloc_array,
     METH_FASTCALL | METH_KEYWORDS,
     "kmem_cache_alloc_array($self, cache, gfp, nr, out, flags=0, cpu=None)\n--\n\n"
     "SlabAllocator.kmem_cache_alloc_array, through the gate."},
    {"kmem_cache_free_array", (PyCFunction)(void (*)(void))g_free_array,
     METH_FASTCALL | METH_KEYWORDS,
     "kmem_cache_free_array($self, cache, nr, objs, cpu=None)\n--\n\n"
     "SlabAllocator.kmem_cache_free_array, through the gate."},
    {"forget_thread", (PyCFunction)g_forget_thread, METH_NOARGS,
     "Forget the cached thread's CPU (after set_cpu)."},
    {NULL, NULL, 0, NULL}
};

/* The offset of __slots__ member `name` of `type`, or -1. */
static Py_ssize_t slot_offset(PyObject *type, const char *name)
{
    PyObject *d = PyDict_GetItemString(((PyTypeObject *)type)->tp_dict, name);
    if (d == NULL || Py_TYPE(d) != &PyMemberDescr_Type)
        return -1;
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    return m->type == T_OBJECT_EX ? m->offset : -1;
}

static int gate_init(Gate *self, PyObject *args, PyObject *kwds)
{
    PyObject *slots, *kmalloc_table, *sa, *keep, *error_type, *cache_type, *array_type, *descr;
    PyObject *compile;
    long long st, table, ca, g, stubs;
    static char *kwlist[] = {"sa", "keep", "error_type", "cache_type", "array_type",
                             "int64_descr", "st", "table", "slots", "ca", "ca_ncols", "ca_ctor",
                             "g", "g_npending", "kmalloc_table", "gfp_kernel",
                             "array_flags_all", "stubs", "compile", NULL};
    if (self->keep != NULL) {
        PyErr_SetString(PyExc_TypeError, "Gate: already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOLLOLLLLLOLLLO", kwlist, &sa, &keep,
                                     &error_type, &cache_type, &array_type, &descr, &st,
                                     &table, &slots, &ca, &self->ca_ncols, &self->ca_ctor, &g,
                                     &self->g_npending, &kmalloc_table, &self->gfp_kernel,
                                     &self->array_flags_all, &stubs, &compile))
        return -1;
    /* references first: dealloc drops them, whatever fails below */
    Py_INCREF(keep);
    self->keep = keep;
    Py_INCREF(error_type);
    self->error_type = error_type;
    Py_INCREF(cache_type);
    self->cache_type = cache_type;
    Py_INCREF(array_type);
    self->array_type = array_type;
    Py_INCREF(descr);
    self->int64_descr = descr;
    Py_INCREF(compile);
    self->compile = compile;
    self->sa_ref = PyWeakref_NewRef(sa, NULL);
    if (self->sa_ref == NULL)
        return -1;
    if (!PyType_Check(self->cache_type) ||
            (self->sa_offset = slot_offset(self->cache_type, "_sa")) < 0 ||
            (self->id_offset = slot_offset(self->cache_type, "_id")) < 0) {
        PyErr_SetString(PyExc_TypeError, "Gate: the cache type has no __slots__ _sa and _id");
        return -1;
    }
    if (!PySequence_Check(slots) || PySequence_Size(slots) != NUNITS ||
            !PySequence_Check(kmalloc_table) || PySequence_Size(kmalloc_table) != 8193) {
        PyErr_SetString(PyExc_ValueError, "Gate: slots or kmalloc table of the wrong length");
        return -1;
    }
    for (Py_ssize_t i = 0; i < NUNITS; i++) {
        PyObject *v = PySequence_GetItem(slots, i);
        self->slots[i] = v ? PyLong_AsLongLong(v) : -1;
        Py_XDECREF(v);
    }
    self->kmalloc_cache = PyMem_Malloc(8193 * sizeof(int64_t));
    if (self->kmalloc_cache == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < 8193; i++) {
        PyObject *v = PySequence_GetItem(kmalloc_table, i);
        self->kmalloc_cache[i] = v ? PyLong_AsLongLong(v) : -1;
        Py_XDECREF(v);
    }
    if (PyErr_Occurred())
        return -1;
    self->st = st;
    self->table = (int64_t *)(intptr_t)table;
    self->stubs = (int64_t *)(intptr_t)stubs;
    self->ca = (int64_t *)(intptr_t)ca;
    self->g = (int64_t *)(intptr_t)g;
    self->have_thread = 0;
    return 0;
}

static void gate_dealloc(Gate *self)
{
    Py_XDECREF(self->sa_ref);
    Py_XDECREF(self->keep);
    Py_XDECREF(self->error_type);
    Py_XDECREF(self->cache_type);
    Py_XDECREF(self->array_type);
    Py_XDECREF(self->int64_descr);
    Py_XDECREF(self->compile);
    PyMem_Free(self->kmalloc_cache);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject GateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "numslab.drivers._gate.Gate",
    .tp_doc = "The facade's call gate of one allocator (see numslab.drivers.gate).",
    .tp_basicsize = sizeof(Gate),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)gate_init,
    .tp_dealloc = (destructor)gate_dealloc,
    .tp_methods = gate_methods,
};

/* probe(array): (data address, ndim, first dimension, flags, descr) as the gate reads them. */
static PyObject *probe(PyObject *module, PyObject *a)
{
    ArrayHead *h = (ArrayHead *)a;
    return Py_BuildValue("(LinIO)", (long long)(intptr_t)h->data, h->nd,
                         h->nd > 0 ? h->dimensions[0] : (Py_ssize_t)-1, (unsigned)h->flags,
                         h->descr);
}

static PyMethodDef module_methods[] = {
    {"probe", probe, METH_O, "How the gate reads an ndarray (checked at start-up)."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef gatemodule = {
    PyModuleDef_HEAD_INIT, "_gate", "The facade's call gate (see numslab.drivers.gate).", -1,
    module_methods
};

PyMODINIT_FUNC PyInit__gate(void)
{
    if (PyType_Ready(&GateType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&gatemodule);
    if (m == NULL)
        return NULL;
    Py_INCREF(&GateType);
    if (PyModule_AddObject(m, "Gate", (PyObject *)&GateType) < 0) {
        Py_DECREF(&GateType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
