/* The OTLP intake's span reader: the fields of every span of an ExportTraceServiceRequest
 * that the mapping reads, straight from the protobuf wire format.
 *
 * Why: through protobuf's Python binding (upb) each attribute costs about 1.9 us (a
 * wrapper per KeyValue, per AnyValue, WhichOneof, the value), 17 us for the nine
 * attributes of a GenAI chat span, which alone caps the intake near 50k spans per CPU
 * second. This reads the same bytes in well under a microsecond per span.
 *
 * The body has already been parsed by upb (which answers 400 for anything that is not a
 * request), so this never decides validity; it still checks every length and tag against
 * the end of its buffer and raises ValueError on anything it cannot read, and the Python
 * side then uses the upb path. Only scalar attribute values are taken (string, bool,
 * int, double); arrays, maps and bytes are skipped without being walked, so no nesting
 * costs anything. A string that is not UTF-8 is skipped (upb refuses such a body first).
 *
 * spans(body) -> [(resource_attrs, [(scope_name, [span, ...]), ...]), ...]
 * span = (key, name, kind, start_ns, end_ns, status_code, attrs, trace_id, span_id,
 *         parent_span_id), the ids as lowercase hex ("" for none), or a fast tuple
 *         (see fast_llm and exporter/otlp_intake/spantree.py)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const uint8_t *p, *end;
} Buf;

static int varint(Buf *b, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end) return -1;
        uint8_t byte = *b->p++;
        v |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

static int tag(Buf *b, uint32_t *field, int *wire) {
    uint64_t t;
    if (varint(b, &t) < 0 || (t >> 3) == 0 || (t >> 3) > 0x1fffffff) return -1;
    *field = (uint32_t)(t >> 3);
    *wire = (int)(t & 7);
    return 0;
}

static int sub(Buf *b, Buf *out) {
    uint64_t n;
    if (varint(b, &n) < 0 || n > (uint64_t)(b->end - b->p)) return -1;
    out->p = b->p;
    out->end = b->p + n;
    b->p += n;
    return 0;
}

static int fixed64(Buf *b, uint64_t *out) {
    if (b->end - b->p < 8) return -1;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | b->p[i];
    b->p += 8;
    *out = v;
    return 0;
}

static int skip(Buf *b, int wire) {
    uint64_t v;
    Buf s;
    switch (wire) {
    case 0: return varint(b, &v);
    case 1:
        if (b->end - b->p < 8) return -1;
        b->p += 8;
        return 0;
    case 2: return sub(b, &s);
    case 5:
        if (b->end - b->p < 4) return -1;
        b->p += 4;
        return 0;
    default: return -1; /* groups are not used by OTLP */
    }
}

static PyObject *text(Buf s) {
    PyObject *o = PyUnicode_DecodeUTF8((const char *)s.p, s.end - s.p, "strict");
    if (o == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) PyErr_Clear();
    return o;
}

/* An AnyValue: a new reference to its scalar, Py_None (borrowed sense: returned with a
   reference) for a value that is not taken, or NULL with an exception set. */
static PyObject *any_value(Buf v) {
    PyObject *out = NULL;
    while (v.p < v.end) {
        uint32_t f;
        int w;
        if (tag(&v, &f, &w) < 0) goto bad;
        Py_CLEAR(out);
        if (f == 1 && w == 2) {
            Buf s;
            if (sub(&v, &s) < 0) goto bad;
            out = text(s);
            if (out == NULL && PyErr_Occurred()) return NULL;
        } else if ((f == 2 || f == 3) && w == 0) {
            uint64_t x;
            if (varint(&v, &x) < 0) goto bad;
            out = f == 2 ? PyBool_FromLong(x != 0) : PyLong_FromLongLong((long long)x);
            if (out == NULL) return NULL;
        } else if (f == 4 && w == 1) {
            uint64_t x;
            double d;
            if (fixed64(&v, &x) < 0) goto bad;
            memcpy(&d, &x, sizeof d);
            out = PyFloat_FromDouble(d);
            if (out == NULL) return NULL;
        } else if (skip(&v, w) < 0) {
            goto bad;
        }
    }
    if (out == NULL) Py_RETURN_NONE;
    return out;
bad:
    Py_XDECREF(out);
    PyErr_SetString(PyExc_ValueError, "unreadable AnyValue");
    return NULL;
}

/* A KeyValue into ``attrs`` (scalars only; later duplicates win). */
static int key_value(Buf kv, PyObject *attrs) {
    /* proto3: an empty key is not on the wire, and is the key "" all the same */
    Buf key = {kv.p, kv.p}, val = {NULL, NULL};
    int have_val = 0;
    while (kv.p < kv.end) {
        uint32_t f;
        int w;
        if (tag(&kv, &f, &w) < 0) return -1;
        if (f == 1 && w == 2) {
            if (sub(&kv, &key) < 0) return -1;
        } else if (f == 2 && w == 2) {
            if (sub(&kv, &val) < 0) return -1;
            have_val = 1;
        } else if (skip(&kv, w) < 0) {
            return -1;
        }
    }
    if (!have_val) return 0;
    PyObject *value = any_value(val);
    if (value == NULL) return PyErr_ExceptionMatches(PyExc_ValueError) ? -1 : -2;
    if (value == Py_None) {
        Py_DECREF(value);
        return 0;
    }
    PyObject *k = text(key);
    if (k == NULL) {
        Py_DECREF(value);
        return PyErr_Occurred() ? -2 : 0;
    }
    int rc = PyDict_SetItem(attrs, k, value);
    Py_DECREF(k);
    Py_DECREF(value);
    return rc < 0 ? -2 : 0;
}

/* -1: unreadable (ValueError to be set), -2: a Python error is set. */
#define FAIL(rc) do { int _r = (rc); if (_r < 0) { status = _r; goto done; } } while (0)

/* FNV-1a, 64 bits: the span identities and response ids the intake remembers against
   retried exports (exporter.sources.otlp.fnv64 is the same function). */
static uint64_t fnv(uint64_t h, const uint8_t *p, const uint8_t *end) {
    for (; p < end; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    return h;
}
#define FNV_BASIS 0xcbf29ce484222325ULL

/* ---- the GenAI inference fast path ------------------------------------------------
   A span the mapping would turn into an llm_call, from the current attribute names only
   (exporter.otlp_intake.mapping._llm_call), becomes that event as JSON here, for the
   native event path; any span with an older name, an odd type or a value that needs a
   look goes the general way (its attributes as a dict). tests/test_otlp_intake.py holds
   both to the same events. */
enum { A_OP, A_PROVIDER, A_SYSTEM, A_REQ_MODEL, A_RESP_MODEL, A_IN, A_OUT, A_CACHED, A_ERROR,
       A_TTFT, A_RESP_ID, A_MCP, A_CCREATE, A_CWRITE, A_REASON, A_AGENT, A_COST, A_LEGACY,
       NKEYS };
static const struct { const char *key; int slot; } KEYS[] = {
    {"gen_ai.operation.name", A_OP}, {"gen_ai.provider.name", A_PROVIDER},
    {"gen_ai.system", A_SYSTEM}, {"gen_ai.request.model", A_REQ_MODEL},
    {"gen_ai.response.model", A_RESP_MODEL}, {"gen_ai.usage.input_tokens", A_IN},
    {"gen_ai.usage.output_tokens", A_OUT}, {"gen_ai.usage.cache_read.input_tokens", A_CACHED},
    {"error.type", A_ERROR}, {"gen_ai.response.time_to_first_chunk", A_TTFT},
    {"gen_ai.response.id", A_RESP_ID}, {"mcp.method.name", A_MCP},
    /* cache writes, reasoning, the agent, a given cost */
    {"gen_ai.usage.cache_creation.input_tokens", A_CCREATE},
    {"gen_ai.usage.cache_write.input_tokens", A_CWRITE},
    {"gen_ai.usage.reasoning.output_tokens", A_REASON}, {"gen_ai.agent.name", A_AGENT},
    {"gen_ai.usage.cost", A_COST},
    /* older names the Python mapping reads: their presence sends the span that way */
    {"llm.request.type", A_LEGACY}, {"gen_ai.usage.prompt_tokens", A_LEGACY},
    {"llm.usage.prompt_tokens", A_LEGACY}, {"gen_ai.usage.completion_tokens", A_LEGACY},
    {"llm.usage.completion_tokens", A_LEGACY}, {"gen_ai.usage.cache_read_input_tokens", A_LEGACY},
    {"gen_ai.usage.cached_input_tokens", A_LEGACY},
    {"llm.usage.cache_read_input_tokens", A_LEGACY},
    {"gen_ai.server.time_to_first_token", A_LEGACY},
    {"gen_ai.response.time_to_first_token", A_LEGACY},
    {"llm.response.time_to_first_token", A_LEGACY},
    {"gen_ai.usage.input_tokens.cached", A_LEGACY},
    {"gen_ai.usage.cache_creation_input_tokens", A_LEGACY},
    {"llm.usage.cache_creation_input_tokens", A_LEGACY},
    {"gen_ai.usage.input_tokens.cache_write", A_LEGACY},
    {"gen_ai.usage.reasoning_tokens", A_LEGACY}, {"llm.usage.reasoning_tokens", A_LEGACY},
    {"gen_ai.usage.output_tokens.reasoning", A_LEGACY},
};
#define NKEYS_LISTED (sizeof KEYS / sizeof KEYS[0])
static size_t KEY_LEN[NKEYS_LISTED]; /* strlen of each, set when the module loads */
#define MAX_ATTRS 128
enum { V_NONE, V_STR, V_INT, V_DOUBLE, V_BOOL, V_OTHER };
typedef struct {
    int type;
    Buf str;
    int64_t i;
    double d;
} Val;

/* The scalar in an AnyValue, without a Python object. */
static int peek_value(Buf v, Val *out) {
    out->type = V_OTHER;
    while (v.p < v.end) {
        uint32_t f;
        int w;
        if (tag(&v, &f, &w) < 0) return -1;
        if (f == 1 && w == 2) {
            if (sub(&v, &out->str) < 0) return -1;
            out->type = V_STR;
        } else if ((f == 2 || f == 3) && w == 0) {
            uint64_t x;
            if (varint(&v, &x) < 0) return -1;
            out->type = f == 2 ? V_BOOL : V_INT;
            out->i = (int64_t)x;
        } else if (f == 4 && w == 1) {
            uint64_t x;
            if (fixed64(&v, &x) < 0) return -1;
            memcpy(&out->d, &x, sizeof out->d);
            out->type = V_DOUBLE;
        } else {
            if (skip(&v, w) < 0) return -1;
            out->type = V_OTHER;
        }
    }
    return 0;
}

static int buf_is(Buf b, const char *text) {
    size_t n = strlen(text);
    return (size_t)(b.end - b.p) == n && memcmp(b.p, text, n) == 0;
}

/* Printable ASCII, no quote or backslash: written into JSON as it is. */
static int plain(Buf b, Py_ssize_t max) {
    if (b.end - b.p > max) return 0;
    for (const uint8_t *p = b.p; p < b.end; p++)
        if (*p < 0x20 || *p > 0x7e || *p == '"' || *p == '\\') return 0;
    return 1;
}

typedef struct {
    char data[2048];
    size_t n;
    int overflow;
} Out;

static void put(Out *o, const char *p, size_t n) {
    if (o->overflow || o->n + n > sizeof o->data) {
        o->overflow = 1;
        return;
    }
    memcpy(o->data + o->n, p, n);
    o->n += n;
}
static void puts_(Out *o, const char *t) { put(o, t, strlen(t)); }
static void put_str(Out *o, Buf b) {
    put(o, "\"", 1);
    put(o, (const char *)b.p, (size_t)(b.end - b.p));
    put(o, "\"", 1);
}
static int put_double(Out *o, double d) {
    char *text = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (text == NULL) return -2;
    puts_(o, text);
    PyMem_Free(text);
    return 0;
}

static const char *const INFERENCE[] = {"chat", "text_completion", "embeddings",
                                        "generate_content", "completion", "embedding",
                                        "responses", NULL};

/* A trace or span id of ``size`` bytes, not all zero (else none: W3C trace context). */
static int valid_id(Buf b, Py_ssize_t size) {
    if (b.end - b.p != size) return 0;
    for (const uint8_t *p = b.p; p < b.end; p++)
        if (*p) return 1;
    return 0;
}

static void put_hex(Out *o, Buf b) {
    static const char digits[] = "0123456789abcdef";
    char text[64];
    size_t n = 0;
    for (const uint8_t *p = b.p; p < b.end && n + 2 <= sizeof text; p++) {
        text[n++] = digits[*p >> 4];
        text[n++] = digits[*p & 15];
    }
    put(o, "\"", 1);
    put(o, text, n);
    put(o, "\"", 1);
}

static void put_int(Out *o, long long n) {
    char number[32];
    snprintf(number, sizeof number, "%lld", n);
    puts_(o, number);
}

#define TOKEN_MAX (1LL << 40) /* exporter.events.Tokens' bound */

/* 1: ``out`` holds the llm_call JSON; 0: the span goes the general way; <0: error. */
static int fast_llm(Val *v, uint64_t code, uint64_t start, uint64_t end, Buf service,
                    Buf trace, Buf sid, Out *out) {
    if (v[A_LEGACY].type != V_NONE || v[A_MCP].type != V_NONE || v[A_SYSTEM].type != V_NONE)
        return 0;
    if (v[A_OP].type != V_STR || !plain(v[A_OP].str, 64)) return 0;
    const char *op = NULL;
    for (int i = 0; INFERENCE[i]; i++)
        if (buf_is(v[A_OP].str, INFERENCE[i])) op = INFERENCE[i];
    if (op == NULL) return 0;
    if (!strcmp(op, "completion")) op = "text_completion";
    else if (!strcmp(op, "embedding")) op = "embeddings";
    Val *prov = &v[A_PROVIDER], *req = &v[A_REQ_MODEL], *resp = &v[A_RESP_MODEL];
    if (prov->type != V_STR || prov->str.p == prov->str.end || !plain(prov->str, 128)) return 0;
    Buf model;
    if (req->type == V_STR && req->str.p != req->str.end) model = req->str;
    else if (req->type != V_NONE && req->type != V_STR) return 0;
    else if (resp->type == V_STR && resp->str.p != resp->str.end) model = resp->str;
    else if (resp->type != V_NONE && resp->type != V_STR) return 0;
    else model = (Buf){(const uint8_t *)"unknown", (const uint8_t *)"unknown" + 7};
    if (!plain(model, 128)) return 0;
    int has_response_model = resp->type == V_STR && resp->str.p != resp->str.end;
    if (has_response_model && !plain(resp->str, 128)) return 0;
    /* the component: the span's own agent name, else the service (a body with an
       invoke_agent span never comes here: spans() reads it the general way) */
    Buf component = service;
    if (v[A_AGENT].type == V_STR && v[A_AGENT].str.p != v[A_AGENT].str.end)
        component = v[A_AGENT].str;
    if (!plain(component, 128)) return 0;
    /* tokens: integers within the event's bound, or the Python mapping decides */
    Val *creation = v[A_CCREATE].type != V_NONE ? &v[A_CCREATE] : &v[A_CWRITE];
    Val *tokens[5] = {&v[A_IN], &v[A_OUT], &v[A_CACHED], creation, &v[A_REASON]};
    long long n[5];
    for (int i = 0; i < 5; i++) {
        if (tokens[i]->type == V_NONE) { n[i] = 0; continue; }
        if (tokens[i]->type != V_INT || tokens[i]->i < 0 || tokens[i]->i > TOKEN_MAX) return 0;
        n[i] = (long long)tokens[i]->i;
    }
    /* subsets larger than their totals were reported beside them (mapping._subsets) */
    if ((n[2] || n[3]) && n[2] + n[3] > n[0]) n[0] += n[2] + n[3];
    if (n[4] && n[4] > n[1]) n[1] += n[4];
    Val *err = &v[A_ERROR], *ttft = &v[A_TTFT], *cost = &v[A_COST];
    int has_error = err->type == V_STR && err->str.p != err->str.end;
    if (has_error && !plain(err->str, 128)) return 0;
    if (ttft->type == V_DOUBLE && !isfinite(ttft->d)) return 0;
    if (cost->type == V_DOUBLE && !isfinite(cost->d)) return 0;
    puts_(out, "{\"kind\":\"llm_call\",\"provider\":");
    put_str(out, prov->str);
    puts_(out, ",\"model\":");
    put_str(out, model);
    puts_(out, ",\"operation\":\"");
    puts_(out, op);
    static const char *const names[5] = {
        "\",\"input_tokens\":", ",\"output_tokens\":", ",\"cache_read_input_tokens\":",
        ",\"cache_creation_input_tokens\":", ",\"reasoning_output_tokens\":"};
    for (int i = 0; i < 5; i++) {
        if (i >= 2 && n[i] == 0) continue; /* the default: less for the native path to read */
        puts_(out, names[i]);
        put_int(out, n[i]);
    }
    puts_(out, ",\"duration_seconds\":");
    if (put_double(out, (double)(end > start ? end - start : 0) / 1e9) < 0) return -2;
    puts_(out, ",\"error_type\":");
    if (has_error) put_str(out, err->str);
    else puts_(out, code == 2 ? "\"_OTHER\"" : "\"\"");
    puts_(out, ",\"component\":");
    put_str(out, component);
    if (has_response_model) {
        puts_(out, ",\"response_model\":");
        put_str(out, resp->str);
    }
    if (valid_id(trace, 16)) {
        puts_(out, ",\"trace_id\":");
        put_hex(out, trace);
    }
    if (valid_id(sid, 8)) {
        puts_(out, ",\"span_id\":");
        put_hex(out, sid);
    }
    if (cost->type == V_DOUBLE || cost->type == V_INT) {
        puts_(out, ",\"cost_usd\":");
        if (cost->type == V_INT) put_int(out, (long long)cost->i);
        else if (put_double(out, cost->d) < 0) return -2;
    }
    if (ttft->type == V_DOUBLE || ttft->type == V_INT) {
        puts_(out, ",\"time_to_first_token_seconds\":");
        if (ttft->type == V_INT) put_int(out, (long long)ttft->i);
        else if (put_double(out, ttft->d) < 0) return -2;
    }
    puts_(out, "}");
    return out->overflow ? 0 : 1;
}

/* A trace or span id as a new str of lowercase hex ("" for none, as valid_id says). */
static PyObject *hex_id(Buf b, Py_ssize_t size) {
    if (!valid_id(b, size)) return PyUnicode_FromStringAndSize("", 0);
    Out o;
    o.n = 0;
    o.overflow = 0;
    put_hex(&o, b);
    return PyUnicode_FromStringAndSize(o.data + 1, (Py_ssize_t)o.n - 2);
}

/* A span: the fast tuple ("llm_call", key, response key, provider, json) where the
   fast path takes it, else (key, name, kind, start_ns, end_ns, status_code, attrs). */
static PyObject *span(Buf s, Buf service, int fast, int *err) {
    const Buf whole = s;
    int status = 0, n_attrs = 0, many = 0;
    PyObject *attrs = NULL, *name = NULL, *result = NULL;
    Buf trace = {s.p, s.p}, sid = {s.p, s.p}, parent = {s.p, s.p}, name_buf = {NULL, NULL};
    Buf kvs[MAX_ATTRS];
    uint64_t kind = 0, start = 0, end = 0, code = 0;
    while (s.p < s.end) {
        uint32_t f;
        int w;
        FAIL(tag(&s, &f, &w));
        if (f == 1 && w == 2) FAIL(sub(&s, &trace));
        else if (f == 2 && w == 2) FAIL(sub(&s, &sid));
        else if (f == 4 && w == 2) FAIL(sub(&s, &parent));
        else if (f == 5 && w == 2) FAIL(sub(&s, &name_buf));
        else if (f == 6 && w == 0) FAIL(varint(&s, &kind));
        else if (f == 7 && w == 1) FAIL(fixed64(&s, &start));
        else if (f == 8 && w == 1) FAIL(fixed64(&s, &end));
        else if (f == 9 && w == 2) {
            Buf kv;
            FAIL(sub(&s, &kv));
            if (n_attrs < MAX_ATTRS) kvs[n_attrs++] = kv;
            else many = 1;
        } else if (f == 15 && w == 2) {
            Buf st;
            FAIL(sub(&s, &st));
            while (st.p < st.end) {
                uint32_t g;
                int x;
                FAIL(tag(&st, &g, &x));
                if (g == 3 && x == 0) FAIL(varint(&st, &code));
                else FAIL(skip(&st, x));
            }
        } else FAIL(skip(&s, w));
    }
    uint64_t key = fnv(fnv(FNV_BASIS, trace.p, trace.end), sid.p, sid.end);
    if (fast && !many) {
        Val v[NKEYS];
        for (int i = 0; i < NKEYS; i++) v[i].type = V_NONE;
        int readable = 1;
        for (int i = 0; i < n_attrs && readable; i++) {
            Buf kv = kvs[i], k = {kv.p, kv.p}, val = {NULL, NULL};
            int have_val = 0;
            while (kv.p < kv.end) {
                uint32_t f;
                int w;
                if (tag(&kv, &f, &w) < 0) { readable = 0; break; }
                if (f == 1 && w == 2) { if (sub(&kv, &k) < 0) { readable = 0; break; } }
                else if (f == 2 && w == 2) {
                    if (sub(&kv, &val) < 0) { readable = 0; break; }
                    have_val = 1;
                } else if (skip(&kv, w) < 0) { readable = 0; break; }
            }
            if (!readable || !have_val) continue;
            size_t klen = (size_t)(k.end - k.p);
            for (size_t j = 0; j < NKEYS_LISTED; j++) {
                if (KEY_LEN[j] == klen && memcmp(k.p, KEYS[j].key, klen) == 0) {
                    Val got;
                    if (peek_value(val, &got) < 0) { readable = 0; break; }
                    /* a value the dict would not hold (no scalar) leaves the key absent */
                    if (got.type != V_OTHER) v[KEYS[j].slot] = got;
                    else if (KEYS[j].slot == A_LEGACY || KEYS[j].slot == A_MCP) readable = 0;
                    break;
                }
            }
        }
        if (readable) {
            Out out;
            out.n = 0;
            out.overflow = 0;
            int rc = fast_llm(v, code, start, end, service, trace, sid, &out);
            if (rc < 0) FAIL(-2);
            if (rc == 1) {
                uint64_t response = 0;
                if (v[A_RESP_ID].type == V_STR && v[A_RESP_ID].str.p != v[A_RESP_ID].str.end) {
                    static const uint8_t zero = 0;
                    response = fnv(fnv(fnv(FNV_BASIS, service.p, service.end), &zero, &zero + 1),
                                   v[A_RESP_ID].str.p, v[A_RESP_ID].str.end);
                }
                result = Py_BuildValue("(sKKs#y#)", "llm_call", (unsigned long long)key,
                                       (unsigned long long)response,
                                       (const char *)v[A_PROVIDER].str.p,
                                       (Py_ssize_t)(v[A_PROVIDER].str.end - v[A_PROVIDER].str.p),
                                       out.data, (Py_ssize_t)out.n);
                if (result == NULL) status = -2;
                goto done;
            }
        }
    }
    attrs = PyDict_New();
    if (attrs == NULL) FAIL(-2);
    if (!many) {
        for (int i = 0; i < n_attrs; i++) FAIL(key_value(kvs[i], attrs));
    } else { /* past MAX_ATTRS: read every attribute again from the span, in order */
        Buf again = whole;
        while (again.p < again.end) {
            uint32_t f;
            int w;
            FAIL(tag(&again, &f, &w));
            if (f == 9 && w == 2) {
                Buf kv;
                FAIL(sub(&again, &kv));
                FAIL(key_value(kv, attrs));
            } else FAIL(skip(&again, w));
        }
    }
    if (name_buf.p != NULL) {
        name = text(name_buf);
        if (name == NULL && PyErr_Occurred()) FAIL(-2);
    }
    if (name == NULL) {
        name = PyUnicode_FromString(""); /* proto3: an empty name is not on the wire */
        if (name == NULL) FAIL(-2);
    }
    PyObject *trace_hex = hex_id(trace, 16), *span_hex = hex_id(sid, 8),
             *parent_hex = hex_id(parent, 8);
    if (trace_hex != NULL && span_hex != NULL && parent_hex != NULL)
        result = Py_BuildValue("(KOKKKKOOOO)", (unsigned long long)key, name,
                               (unsigned long long)kind, (unsigned long long)start,
                               (unsigned long long)end, (unsigned long long)code, attrs,
                               trace_hex, span_hex, parent_hex);
    Py_XDECREF(trace_hex);
    Py_XDECREF(span_hex);
    Py_XDECREF(parent_hex);
    if (result == NULL) status = -2;
done:
    Py_XDECREF(name);
    Py_XDECREF(attrs);
    *err = status;
    return result;
}

static int append_new(PyObject *list, PyObject *item) {
    if (item == NULL) return -2;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc < 0 ? -2 : 0;
}

/* The service.name string of a Resource (the last one given; "" when it is not a
   string), as bytes: the component the fast path writes. */
static int service_of(Buf resource, Buf *service) {
    static const uint8_t empty = 0;
    *service = (Buf){&empty, &empty};
    while (resource.p < resource.end) {
        uint32_t f;
        int w;
        if (tag(&resource, &f, &w) < 0) return -1;
        if (!(f == 1 && w == 2)) {
            if (skip(&resource, w) < 0) return -1;
            continue;
        }
        Buf kv, k = {NULL, NULL}, val = {NULL, NULL};
        if (sub(&resource, &kv) < 0) return -1;
        int have_val = 0;
        k.p = k.end = kv.p;
        while (kv.p < kv.end) {
            uint32_t g;
            int x;
            if (tag(&kv, &g, &x) < 0) return -1;
            if (g == 1 && x == 2) { if (sub(&kv, &k) < 0) return -1; }
            else if (g == 2 && x == 2) { if (sub(&kv, &val) < 0) return -1; have_val = 1; }
            else if (skip(&kv, x) < 0) return -1;
        }
        if (have_val && buf_is(k, "service.name")) {
            Val got;
            if (peek_value(val, &got) < 0) return -1;
            if (got.type == V_STR) *service = got.str;
            else if (got.type != V_OTHER) *service = (Buf){&empty, &empty};
        }
    }
    return 0;
}

/* Whether ``needle`` occurs in ``b`` (memchr for its first byte, then memcmp). */
static int contains(Buf b, const char *needle) {
    size_t n = strlen(needle);
    const uint8_t *p = b.p;
    while ((size_t)(b.end - p) >= n) {
        p = memchr(p, needle[0], (size_t)(b.end - p) - n + 1);
        if (p == NULL) return 0;
        if (memcmp(p, needle, n) == 0) return 1;
        p++;
    }
    return 0;
}

static PyObject *spans(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *arg;
    int fast = 1;
    if (!PyArg_ParseTuple(args, "O|p", &arg, &fast)) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    int status = 0;
    PyObject *out = PyList_New(0), *resource = NULL, *scopes = NULL, *scope_spans = NULL,
             *scope_name = NULL;
    if (out == NULL) { PyBuffer_Release(&view); return NULL; }
    Buf body = {(const uint8_t *)view.buf, (const uint8_t *)view.buf + view.len};
    /* A body with an agent span: the general way for all its spans, so that the mapping
       can give each call the agent that encloses it (spantree.enclosing_agents). */
    if (fast && contains(body, "invoke_agent")) fast = 0;
    while (body.p < body.end) {
        uint32_t f;
        int w;
        Buf rs;
        FAIL(tag(&body, &f, &w));
        if (!(f == 1 && w == 2)) { FAIL(skip(&body, w)); continue; }
        FAIL(sub(&body, &rs));
        resource = PyDict_New();
        scopes = PyList_New(0);
        if (resource == NULL || scopes == NULL) FAIL(-2);
        /* First the resource (wherever it sits), for the service name the spans need. */
        Buf service = {NULL, NULL}, pass = rs;
        static const uint8_t empty = 0;
        service.p = service.end = &empty;
        while (pass.p < pass.end) {
            Buf part;
            FAIL(tag(&pass, &f, &w));
            if (f == 1 && w == 2) { /* Resource */
                FAIL(sub(&pass, &part));
                FAIL(service_of(part, &service));
                while (part.p < part.end) {
                    uint32_t g;
                    int x;
                    FAIL(tag(&part, &g, &x));
                    if (g == 1 && x == 2) {
                        Buf kv;
                        FAIL(sub(&part, &kv));
                        FAIL(key_value(kv, resource));
                    } else FAIL(skip(&part, x));
                }
            } else FAIL(skip(&pass, w));
        }
        while (rs.p < rs.end) {
            Buf part;
            FAIL(tag(&rs, &f, &w));
            if (f == 2 && w == 2) { /* ScopeSpans */
                FAIL(sub(&rs, &part));
                scope_spans = PyList_New(0);
                scope_name = PyUnicode_FromString("");
                if (scope_spans == NULL || scope_name == NULL) FAIL(-2);
                while (part.p < part.end) {
                    uint32_t g;
                    int x;
                    Buf item;
                    FAIL(tag(&part, &g, &x));
                    if (g == 1 && x == 2) { /* InstrumentationScope */
                        FAIL(sub(&part, &item));
                        while (item.p < item.end) {
                            uint32_t h;
                            int y;
                            FAIL(tag(&item, &h, &y));
                            if (h == 1 && y == 2) {
                                Buf n;
                                FAIL(sub(&item, &n));
                                PyObject *t = text(n);
                                if (t == NULL && PyErr_Occurred()) FAIL(-2);
                                if (t != NULL) Py_SETREF(scope_name, t);
                            } else FAIL(skip(&item, y));
                        }
                    } else if (g == 2 && x == 2) {
                        int err = 0;
                        FAIL(sub(&part, &item));
                        PyObject *one = span(item, service, fast, &err);
                        FAIL(err);
                        FAIL(append_new(scope_spans, one));
                    } else FAIL(skip(&part, x));
                }
                FAIL(append_new(scopes, Py_BuildValue("(OO)", scope_name, scope_spans)));
                Py_CLEAR(scope_name);
                Py_CLEAR(scope_spans);
            } else FAIL(skip(&rs, w));
        }
        FAIL(append_new(out, Py_BuildValue("(OO)", resource, scopes)));
        Py_CLEAR(resource);
        Py_CLEAR(scopes);
    }
done:
    PyBuffer_Release(&view);
    Py_XDECREF(resource);
    Py_XDECREF(scopes);
    Py_XDECREF(scope_spans);
    Py_XDECREF(scope_name);
    if (status < 0) {
        Py_DECREF(out);
        if (status == -1 || !PyErr_Occurred()) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "unreadable ExportTraceServiceRequest");
        }
        return NULL;
    }
    return out;
}

static PyObject *fnv64(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *p = (const uint8_t *)view.buf;
    uint64_t h = fnv(FNV_BASIS, p, p + view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong((unsigned long long)h);
}

static PyMethodDef methods[] = {
    {"spans", spans, METH_VARARGS,
     "spans(body, fast=True): the resources, scopes and spans of an "
     "ExportTraceServiceRequest body."},
    {"fnv64", fnv64, METH_O, "FNV-1a (64 bits) of a bytes-like object."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "exporter._otlp",
                                    "OTLP span reader (see exporter/_otlp.c).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__otlp(void) {
    for (size_t j = 0; j < NKEYS_LISTED; j++) KEY_LEN[j] = strlen(KEYS[j].key);
    return PyModule_Create(&module);
}
