/*
 * exporter._lines: the native ingest path of the AI aggregator.
 *
 * Why it exists: an event costs ~2.5 us in the Python path (msgspec decode, the
 * duplicate-key proof, then the Python handler). Here one pass validates an event and
 * applies it to the aggregator's own containers (the same dicts and rows the Python
 * handlers update, in the same order, with the same float arithmetic), so the state is
 * identical to the Python path's, bit for bit. Three shapes of input share the one
 * validator and the handlers: JSON lines (run), single-event byte slices (run_items:
 * Redis entries, NDJSON lines) and a whole JSON array body (run_array: a push).
 *
 * The containers come from one table, Aggregator.native_table() (the native contract,
 * see exporter/native.py): the stores and tracked maps by catalog metric name, with their
 * label names, and the histogram row layout, under a version. Lines() refuses a table
 * whose version, row layout or label names are not the ones below (CONTRACT_VERSION,
 * HISTOGRAM_ROW, STORE_LABELS); nothing of the aggregator is reached by attribute name.
 *
 * It is deliberately narrow. An event is taken here only when it is certainly valid and
 * simple: one flat JSON object of a kind this file handles, every key a field of that kind
 * at most once, strings of printable ASCII without escapes and at most 128 bytes (so
 * the labels need no sanitizing), numbers within msgspec's constraints (which the Python
 * side passes in, from the event model itself). Any other event stops the run at that
 * event and is given back to the Python path, which decides (event or rejection and its
 * reason) and applies it, then calls in again after it. So the native path never decides
 * a rejection and never accepts what msgspec would refuse; the differential tests check
 * both against each other.
 *
 * Kinds that are rare in real traffic (intervention, security_event, provider_limit,
 * component_status) are validated here and applied by the aggregator's Python handler
 * (from the table), without a Python decode.
 */
#define _GNU_SOURCE /* strtod_l */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ENTRIES 24
#define MAX_FIELDS 24 /* at most 32: validate() tracks the keys seen in 32 bits */
#define MAX_STR 128
#define MAX_ENUM 16
#define CACHE_SIZE 4096     /* interned label strings, a power of two */

/* ---- what the handlers know: kinds and their fields, in handler order ------------- */
enum { K_LLM, K_TASK, K_TOOL, K_GATE, K_RES, K_GUARD, K_ERROR, NKINDS };
static const char *const KIND_NAMES[NKINDS] = {"llm_call", "task", "tool_call",
                                               "quality_gate", "resolution", "guardian",
                                               "error"};
enum { L_TS, L_PROVIDER, L_MODEL, L_OPERATION, L_IN, L_OUT, L_CACHE_READ, L_CACHE_WRITE,
       L_REASONING, L_CACHED, L_DURATION, L_TTFT, L_TPOC, L_COST, L_ERROR, L_COMPONENT,
       L_RESPONSE_MODEL, L_TRACE, L_SPAN };
enum { T_TS, T_COMPONENT, T_STATUS, T_QUEUE, T_ID, T_DURATION, T_OPERATION, T_TRACE, T_SPAN };
enum { O_TS, O_TOOL, O_AGENT, O_DURATION, O_ERROR, O_TOOL_TYPE, O_TRACE, O_SPAN };
enum { G_TS, G_GATE, G_DECISION, G_SCORE };
enum { R_TS, R_LOOP, R_ACTION, R_COMPONENT, R_OUTCOME };
enum { D_TS, D_GUARDIAN, D_VERDICT, D_TYPE, D_DURATION };
enum { E_TS, E_COMPONENT, E_CATEGORY };
static const char *const FIELD_NAMES[NKINDS][MAX_FIELDS] = {
    {"ts", "provider", "model", "operation", "input_tokens", "output_tokens",
     "cache_read_input_tokens", "cache_creation_input_tokens", "reasoning_output_tokens",
     "cached_input_tokens", "duration_seconds", "time_to_first_token_seconds",
     "time_per_output_chunk_seconds", "cost_usd", "error_type", "component",
     "response_model", "trace_id", "span_id", NULL},
    {"ts", "component", "status", "queue", "task_id", "duration_seconds", "operation",
     "trace_id", "span_id", NULL},
    {"ts", "tool", "agent", "duration_seconds", "error_type", "tool_type", "trace_id",
     "span_id", NULL},
    {"ts", "gate", "decision", "score", NULL},
    {"ts", "loop_id", "action", "component", "outcome", NULL},
    {"ts", "guardian", "verdict", "guardian_type", "duration_seconds", NULL},
    {"ts", "component", "category", NULL},
};
#define MAX_KINDS 16 /* the native kinds, then the delegated ones */

/* F_HEX: a string of exactly max_len lowercase hex digits, or empty (trace / span ids). */
typedef enum { F_STR, F_ENUM, F_INT, F_FLOAT, F_BOOL, F_HEX } FieldType;

typedef struct {
    const char *name;
    Py_ssize_t name_len;
    FieldType type;
    int nullable, required, has_ge, has_le, cached;
    Py_ssize_t min_len, max_len;
    double ge, le;
    int n_enum;
    const char *enum_bytes[MAX_ENUM];
    Py_ssize_t enum_lens[MAX_ENUM];
    PyObject *enum_objs[MAX_ENUM]; /* interned str, owned */
    PyObject *default_obj;         /* owned; None when the default is None */
    long long default_int;
    double default_float;
} FieldSpec;

/* A kind: native (its handler is here) or delegated (validated here, then built as the
   event struct and given to the aggregator's Python handler: the kinds too rare to be
   worth a second implementation, which still skip the Python decode). */
typedef struct {
    int enabled, n_fields;
    const char *name;
    Py_ssize_t name_len;
    PyObject *cls, *handler; /* delegated: the struct type and Aggregator handler */
    int flushes; /* delegated: its handler may touch a store shadowed here */
    PyObject *field_keys[MAX_FIELDS]; /* delegated: field names as str, for the kwargs */
    FieldSpec fields[MAX_FIELDS];
} KindSpec;

/* Per parse (so that a parse shares nothing mutable): for each kind, the field the key
   at each position was on the last line of that kind. Key order rarely changes. */
typedef signed char Hints[MAX_KINDS][MAX_ENTRIES];

/* A parsed value, after defaults are filled in. */
typedef struct {
    int is_null;
    const char *s; /* F_STR / F_ENUM bytes when present */
    Py_ssize_t n;
    PyObject *obj; /* borrowed: enum value or default str (F_STR present: made lazily) */
    PyObject *owned; /* a str made for this line (released after its handler), or NULL */
    long long i;
    double f;
    int b;
    int present;
} Value;

typedef struct {
    PyObject *values; /* dict, borrowed from the store (held by `keep`) */
    PyObject *slow;   /* add_new (counters) or row (histograms), bound method */
    PyObject *offer;  /* histograms: offer_exemplar, bound method; else None */
    PyObject *exemplars; /* histograms: key -> [exemplar or None per bucket]; else None */
    PyObject *other;  /* owned: the ``other`` key, made on first need */
    double *bounds;
    Py_ssize_t n_bounds;
} Store;

typedef struct {
    PyObject *open;   /* _Tracked.open, for what the C fast path leaves (a new key, the cap) */
    PyObject *where;  /* item -> key */
    PyObject *by_key; /* key -> {item: since} */
    Py_ssize_t limit;
} Tracked;

enum { S_LLM_DURATION, S_LLM_TTFT, S_LLM_TOKEN_USAGE, S_LLM_REQUESTS, S_LLM_TOKENS,
       S_LLM_COST, S_TOOL_DURATION, S_TOOL_CALLS, S_TASKS, S_TASK_DURATION,
       S_GATE_DECISIONS, S_GATE_SCORE, S_RES_ATTEMPTS, S_RES_INCIDENTS, S_RES_CLOSURES,
       S_GUARDIAN_DECISIONS, S_GUARDIAN_DURATION, S_ERRORS, S_LLM_TPOC,
       S_LLM_UNPRICED_REQUESTS, S_LLM_UNPRICED_TOKENS, S_LLM_CACHE_SAVINGS, S_AGENT_TOKENS,
       S_INVOKE_AGENT_DURATION, NSTORES };
/* The native contract (exporter/native.py, "Native contract"): the store table that
   Aggregator.native_table() exports, keyed by catalog metric names. Its version and the
   histogram row layout are checked when a Lines is bound; so is every store's label
   names, in the order the handlers here build the keys. A mismatch refuses the bind
   (ValueError): the aggregator changed without this file, nothing is misread. */
#define CONTRACT_VERSION 3
static const char *const HISTOGRAM_ROW[] = {"buckets", "+Inf", "sum", NULL};
static const char *const STORE_NAMES[NSTORES] = {
    "gen_ai_client_operation_duration_seconds",
    "gen_ai_client_operation_time_to_first_chunk_seconds", "gen_ai_client_token_usage",
    "ai_llm_requests_total", "ai_llm_tokens_total", "ai_llm_cost_usd_total",
    "gen_ai_execute_tool_duration_seconds", "ai_tool_calls_total", "ai_tasks_total",
    "ai_task_duration_seconds", "ai_quality_gate_decisions_total", "ai_quality_gate_score",
    "ai_resolution_attempts_total", "ai_resolution_incidents_total",
    "ai_resolution_closures_total", "ai_guardian_decisions_total",
    "ai_guardian_duration_seconds", "ai_errors_total",
    "gen_ai_client_operation_time_per_output_chunk_seconds", "ai_llm_unpriced_requests_total",
    "ai_llm_unpriced_tokens_total", "ai_llm_cache_savings_usd_total", "ai_agent_tokens_total",
    "gen_ai_invoke_agent_duration_seconds"};
/* The label names of each store's keys, as the handlers below build them. */
static const char *const STORE_LABELS[NSTORES] = {
    "gen_ai_operation_name,gen_ai_provider_name,gen_ai_request_model,error_type,"
    "gen_ai_response_model",
    "gen_ai_operation_name,gen_ai_provider_name,gen_ai_request_model",
    "gen_ai_operation_name,gen_ai_provider_name,gen_ai_request_model,gen_ai_token_type",
    "gen_ai_provider_name,gen_ai_request_model,outcome,error_type",
    "gen_ai_provider_name,gen_ai_request_model,gen_ai_token_type",
    "gen_ai_provider_name,gen_ai_request_model",
    "gen_ai_tool_name,gen_ai_agent_name,error_type,gen_ai_tool_type",
    "gen_ai_tool_name,gen_ai_agent_name,outcome,gen_ai_tool_type", "component,queue,status",
    "component,queue,status", "gate,decision", "gate", "component", "component",
    "component,outcome", "guardian,guardian_type,verdict", "guardian,guardian_type",
    "component,category", "gen_ai_operation_name,gen_ai_provider_name,gen_ai_request_model",
    "gen_ai_provider_name,gen_ai_request_model",
    "gen_ai_provider_name,gen_ai_request_model,gen_ai_token_type",
    "gen_ai_provider_name,gen_ai_request_model",
    "gen_ai_agent_name,gen_ai_request_model,gen_ai_token_type", "gen_ai_agent_name,error_type"};
/* Whether each store is a histogram (its rows laid out as HISTOGRAM_ROW). */
static const int STORE_HISTOGRAM[NSTORES] = {1, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0, 1,
                                             0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1};
enum { TR_QUEUED, TR_RUNNING, TR_LOOPS, NTRACKED };
static const char *const TRACKED_NAMES[NTRACKED] = {"ai_task_queue_depth",
                                                    "ai_task_in_progress",
                                                    "ai_resolution_active"};
static const char *const TRACKED_LABELS[NTRACKED] = {"component,queue", "component,queue",
                                                     "component"};

typedef struct {
    Py_ssize_t len;
    char bytes[MAX_STR];
    PyObject *obj;
} CacheEntry;

/* The shadow of one (store, label set) entry: loaded from the store's container on its
   first use in a run, added to as C doubles (the same IEEE additions, in the same order,
   as the Python handlers make), written back when the run ends or before Python code
   that could touch the stores runs. Found by the values of its labels, so two equal
   label sets never have two shadows. */
typedef struct Cell {
    struct Cell *next;       /* chain in the table */
    struct Cell *next_dirty; /* loaded cells, to write back */
    Py_hash_t hash;
    int store, n, dirty;
    uint64_t epoch;          /* loaded in this epoch; stale otherwise */
    uint64_t touched;        /* histogram entries changed since the load */
    PyObject *items[5];      /* owned */
    PyObject *key;           /* owned: the label tuple */
    PyObject *row;           /* owned while loaded: the histogram's row list */
    PyObject *exrow;         /* owned: the histogram's exemplar row, as of exrow_epoch */
    uint64_t exrow_epoch;
    double vals[];           /* 1 (counter) or buckets + 2 (histogram: buckets, +Inf, sum) */
} Cell;
#define CELL_BUCKETS 16384 /* chains, a power of two */
#define MAX_CELLS 65536    /* past this, the cells are written back and dropped */

/* What one label combination of one kind resolves to: its label strings and the cells of
   the store entries it feeds, so that an event whose labels were seen before costs one
   hash instead of a string and a cell lookup per label and per store. */
#define SLOT_CACHE 4096 /* direct-mapped, a power of two */
#define SLOT_CONTENT 384
#define VARIANTS 5 /* token types: input, output, cache_read, cache_creation, reasoning */
/* The rates of an llm_call slot (PriceTable.rates, asked once per slot): in Rates' field
   order input, output, cache_read, cache_write, reasoning. */
enum { R_INPUT, R_OUTPUT, R_CACHE_READ, R_CACHE_WRITE, R_REASONING, NRATES };
enum { PRICE_UNKNOWN, PRICE_NONE, PRICE_KNOWN };
typedef struct {
    uint64_t hash;
    int kind;
    Py_ssize_t len;
    PyObject *strs[MAX_FIELDS];   /* owned, filled on first use */
    PyObject *tracked_key;        /* owned: the key of its tracked items, made on first use */
    Cell *cells[NSTORES * VARIANTS]; /* borrowed from the cell table; by store and variant */
    int price;                    /* PRICE_*: whether rates[] holds the slot's rates */
    double rates[NRATES];
    double saving;                /* max(input - cache_read, 0): dollars per cached token */
    char content[SLOT_CONTENT];   /* the label fields, each as length + bytes */
} Slot;

typedef struct {
    PyObject_HEAD
    KindSpec kinds[MAX_KINDS];
    int n_kinds;
    PyObject *no_args;
    Store stores[NSTORES];
    Tracked tracked[NTRACKED];
    PyObject *spend_for; /* callable(now) -> (spend dict, budgets dict) */
    PyObject *price_for; /* callable(provider, model) -> Rates or None */
    PyObject *keep;      /* list of every object borrowed above */
    PyObject *s_error, *s_success, *s_input, *s_output, *s_cache_read, *s_cache_creation,
        *s_reasoning, *s_resolved, *s_total, *s_other, *s_empty;
    PyObject *trace, *span; /* the current event's ids (borrowed), made on first offer */
    Value *trace_val, *span_val; /* the current event's ids as parsed, or NULL: none */
    int trace_kind, trace_field, span_field;
    double exemplar_refresh; /* table["exemplar_refresh_seconds"] */
    PyObject *s_closed, *s_attempt, *s_queued, *s_retried, *s_started, *s_succeeded;
    CacheEntry *cache;
    Cell **cells;
    Py_ssize_t n_cells;
    Slot **slots;
    Slot *slot;   /* the current event's, or NULL */
    Slot *orphan; /* the current event's, dropped from the table: freed after its handler */
    Cell *dirty;
    uint64_t epoch;
    /* per run */
    PyObject *spend, *budgets;
    double now;
} Lines;

/* ---- the string cache: label values repeat, so each is made (and hashed) once ------ */
/* A fast hash of short byte strings, 8 bytes a step (FxHash's mixing). */
static uint64_t hash_bytes(const char *s, Py_ssize_t n) {
    uint64_t h = (uint64_t)n * 0x9E3779B97F4A7C15u;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (((h << 5) | (h >> 59)) ^ w) * 0x517CC1B727220A95u;
        s += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, s, (size_t)n);
        h = (((h << 5) | (h >> 59)) ^ w) * 0x517CC1B727220A95u;
    }
    return h ^ (h >> 29);
}

static PyObject *make_str(Lines *self, const char *s, Py_ssize_t n, int cached) {
    /* New reference to a str of ASCII bytes s[0:n]. */
    if (!cached) return PyUnicode_FromStringAndSize(s, n);
    CacheEntry *e = &self->cache[hash_bytes(s, n) & (CACHE_SIZE - 1)];
    if (e->obj && e->len == n && memcmp(e->bytes, s, (size_t)n) == 0) {
        Py_INCREF(e->obj);
        return e->obj;
    }
    PyObject *obj = PyUnicode_FromStringAndSize(s, n);
    if (!obj) return NULL;
    if (PyObject_Hash(obj) == -1) { /* computed once, kept with the cached object */
        Py_DECREF(obj);
        return NULL;
    }
    Py_XSETREF(e->obj, obj);
    Py_INCREF(obj);
    e->len = n;
    memcpy(e->bytes, s, (size_t)n);
    return obj;
}

/* ---- the parser -------------------------------------------------------------------- */
typedef enum { V_STR, V_NUM, V_TRUE, V_FALSE, V_NULL } ValueKind;

typedef struct {
    const char *key;
    Py_ssize_t key_len;
    ValueKind vkind;
    const char *v;
    Py_ssize_t v_len;
    int is_int;
} Entry;

static inline const char *skip_ws(const char *p, const char *e) {
    if (p < e && (unsigned char)*p > ' ') return p; /* compact JSON: nothing to skip */
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
    return p;
}

/* Whether any byte of the word is outside 0x20..0x7e or is '"' or '\\' (SWAR: a byte
   below 0x20, above 0x7e, or equal to either, sets its high bit in the result). */
static inline uint64_t special_bytes(uint64_t x) {
    const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
    uint64_t below = (x - ones * 0x20) & ~x;
    uint64_t above = (x + ones * (0x80 - 0x7f)) | x;
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
    uint64_t quote = (q - ones) & ~q, slash = (b - ones) & ~b;
    return (below | above | quote | slash) & high;
}

/* A string of printable ASCII without escapes; returns the closing quote or NULL.
   Eight bytes a step while ``limit`` (the end of the body, not of the line) allows: the
   first flagged byte of a word is exact (the SWAR tests only over-flag above a true
   hit), and it must be the closing quote. The newline ending the line is a flagged byte
   too, so a string never runs past its line. */
static inline const char *scan_plain_string(const char *p, const char *e, const char *limit) {
    while (limit - p >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        uint64_t m = special_bytes(x);
        if (m) {
            p += __builtin_ctzll(m) >> 3;
            return p < e && *p == '"' ? p : NULL;
        }
        p += 8;
    }
    while (p < e) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p;
        if (c < 0x20 || c > 0x7e || c == '\\') return NULL;
        p++;
    }
    return NULL;
}

/* JSON number grammar; returns the end or NULL. */
static inline const char *scan_number(const char *p, const char *e, int *is_int) {
    *is_int = 1;
    if (p < e && *p == '-') p++;
    if (p >= e) return NULL;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < e && *p >= '0' && *p <= '9') p++;
    } else {
        return NULL;
    }
    if (p < e && *p == '.') {
        *is_int = 0;
        p++;
        if (p >= e || *p < '0' || *p > '9') return NULL;
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        *is_int = 0;
        p++;
        if (p < e && (*p == '+' || *p == '-')) p++;
        if (p >= e || *p < '0' || *p > '9') return NULL;
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    return p;
}

/* Parses one flat object of plain values from p (blank allowed before it) into key/value
   entries; -1 when there is none, 0 when p..e is blank, else the entry count, with
   *after just past the closing brace. */
static int parse_object(const char *p, const char *e, const char *limit, Entry *out,
                        const char **after) {
    p = skip_ws(p, e);
    if (p == e) return 0;
    if (*p != '{') return -1;
    p = skip_ws(p + 1, e);
    int n = 0;
    if (p < e && *p == '}') return -1; /* {} has no kind: the Python path says so */
    for (;;) {
        if (n == MAX_ENTRIES || p >= e || *p != '"') return -1;
        const char *k = p + 1, *q = scan_plain_string(k, e, limit);
        if (!q) return -1;
        Entry *en = &out[n++];
        en->key = k;
        en->key_len = q - k;
        p = skip_ws(q + 1, e);
        if (p >= e || *p != ':') return -1;
        p = skip_ws(p + 1, e);
        if (p >= e) return -1;
        en->v = p;
        en->is_int = 0;
        switch (*p) {
            case '"': {
                const char *s = p + 1, *end = scan_plain_string(s, e, limit);
                if (!end) return -1;
                en->vkind = V_STR;
                en->v = s;
                en->v_len = end - s;
                p = end + 1;
                break;
            }
            case 't':
                if (e - p < 4 || memcmp(p, "true", 4) != 0) return -1;
                en->vkind = V_TRUE;
                p += 4;
                break;
            case 'f':
                if (e - p < 5 || memcmp(p, "false", 5) != 0) return -1;
                en->vkind = V_FALSE;
                p += 5;
                break;
            case 'n':
                if (e - p < 4 || memcmp(p, "null", 4) != 0) return -1;
                en->vkind = V_NULL;
                p += 4;
                break;
            default: {
                const char *end = scan_number(p, e, &en->is_int);
                if (!end) return -1;
                en->vkind = V_NUM;
                en->v_len = end - p;
                p = end;
            }
        }
        p = skip_ws(p, e);
        if (p >= e) return -1;
        if (*p == ',') {
            p = skip_ws(p + 1, e);
            continue;
        }
        if (*p != '}') return -1;
        *after = p + 1;
        return n;
    }
}

/* Splits one line into key/value entries; -1 when it is not a flat object of plain
   values, 0 for a blank line, else the entry count. */
static int split_object(const char *p, const char *e, const char *limit, Entry *out) {
    const char *after = e;
    int n = parse_object(p, e, limit, out, &after);
    return n > 0 && skip_ws(after, e) != e ? -1 : n;
}

/* strtod in the C locale whatever the process's is (a comma-decimal locale would misread
   JSON numbers); made once at import. */
static locale_t c_locale;

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A JSON number (already scanned) as the correctly rounded double: exactly, in one IEEE
   operation, when the digits fit 2^53 and the power of ten is exact (Clinger's fast
   path); otherwise by strtod, which rounds correctly too. 0 when out of range. */
static int number_to_double(const char *s, Py_ssize_t n, double *out) {
    const char *p = s, *e = s + n;
    int neg = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    uint64_t w = 0;
    int digits = 0, frac = 0, exp = 0, fast = 1;
    for (; p < e && *p >= '0' && *p <= '9'; p++) {
        if (digits || *p != '0') digits++;
        if (digits > 15) fast = 0; else w = w * 10 + (uint64_t)(*p - '0');
    }
    if (p < e && *p == '.') {
        for (p++; p < e && *p >= '0' && *p <= '9'; p++) {
            if (digits || *p != '0') digits++;
            if (digits > 15) fast = 0; else { w = w * 10 + (uint64_t)(*p - '0'); frac++; }
        }
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        int eneg = 0;
        if (*p == '+' || *p == '-') eneg = *p++ == '-';
        int x = 0;
        for (; p < e && *p >= '0' && *p <= '9'; p++) {
            if (x < 100000) x = x * 10 + (*p - '0');
        }
        exp = eneg ? -x : x;
    }
    int e10 = exp - frac;
    if (fast && e10 >= -22 && e10 <= 22) {
        double d = (double)w;
        d = e10 < 0 ? d / POW10[-e10] : d * POW10[e10];
        *out = neg ? -d : d;
        return 1;
    }
    char buf[128];
    if (n >= (Py_ssize_t)sizeof buf) return 0;
    memcpy(buf, s, (size_t)n);
    buf[n] = '\0';
    double d = strtod_l(buf, NULL, c_locale);
    if (!isfinite(d)) return 0;
    *out = d;
    return 1;
}

static int check_range(const FieldSpec *f, double d) {
    return (!f->has_ge || d >= f->ge) && (!f->has_le || d <= f->le);
}

/* a[0:n] == b[0:n] for short keys, without a call (both readable for n bytes). */
static inline int same_bytes(const char *a, const char *b, Py_ssize_t n) {
    if (n >= 8) {
        uint64_t x, y, u, v;
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        memcpy(&u, a + n - 8, 8);
        memcpy(&v, b + n - 8, 8);
        return x == y && u == v && (n <= 16 || memcmp(a + 8, b + 8, (size_t)(n - 16)) == 0);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (a[i] != b[i]) return 0;
    }
    return 1;
}

/* Fills vals[] for one line of kind k; 1 if the line is certainly valid, else 0. */
static int validate(const KindSpec *ks, signed char *hint, const Entry *en, int n,
                    int kind_entry, Value *vals) {
    unsigned int seen = 0;
    for (int i = 0; i < n; i++) {
        if (i == kind_entry) continue;
        const Entry *x = &en[i];
        int fi = hint[i];
        if (fi < 0 || ks->fields[fi].name_len != x->key_len ||
            !same_bytes(ks->fields[fi].name, x->key, x->key_len)) {
            fi = -1;
            for (int j = 0; j < ks->n_fields; j++) {
                const FieldSpec *f = &ks->fields[j];
                if (f->name_len == x->key_len && f->name[0] == x->key[0] &&
                    same_bytes(f->name, x->key, x->key_len)) {
                    fi = j;
                    break;
                }
            }
            hint[i] = (signed char)fi;
        }
        if (fi < 0 || (seen & (1u << fi))) return 0; /* unknown or duplicate key */
        seen |= 1u << fi;
        const FieldSpec *f = &ks->fields[fi];
        Value *v = &vals[fi];
        v->present = 1;
        v->owned = NULL;
        v->is_null = 0;
        if (x->vkind == V_NULL) {
            if (!f->nullable) return 0;
            v->is_null = 1;
            v->obj = Py_None;
            continue;
        }
        switch (f->type) {
            case F_STR:
                if (x->vkind != V_STR || x->v_len > MAX_STR || x->v_len < f->min_len ||
                    x->v_len > f->max_len)
                    return 0;
                v->s = x->v;
                v->n = x->v_len;
                v->obj = NULL;
                break;
            case F_ENUM: {
                if (x->vkind != V_STR) return 0;
                int found = -1;
                for (int j = 0; j < f->n_enum; j++) {
                    if (f->enum_lens[j] == x->v_len &&
                        memcmp(f->enum_bytes[j], x->v, (size_t)x->v_len) == 0) {
                        found = j;
                        break;
                    }
                }
                if (found < 0) return 0;
                v->obj = f->enum_objs[found];
                break;
            }
            case F_INT: {
                if (x->vkind != V_NUM || !x->is_int) return 0;
                const char *p = x->v, *e = x->v + x->v_len;
                int neg = *p == '-';
                if (neg) p++;
                if (e - p > 15) return 0;
                long long i = 0;
                for (; p < e; p++) i = i * 10 + (*p - '0');
                if (neg) i = -i;
                if (!check_range(f, (double)i)) return 0;
                v->i = i;
                break;
            }
            case F_FLOAT: {
                double d;
                if (x->vkind != V_NUM || !number_to_double(x->v, x->v_len, &d) ||
                    !check_range(f, d))
                    return 0;
                /* an integer literal is an int to msgspec, converted: -0 is 0.0 */
                v->f = x->is_int && d == 0.0 ? 0.0 : d;
                break;
            }
            case F_BOOL:
                if (x->vkind != V_TRUE && x->vkind != V_FALSE) return 0;
                v->b = x->vkind == V_TRUE;
                break;
            case F_HEX:
                if (x->vkind != V_STR || (x->v_len != 0 && x->v_len != f->max_len)) return 0;
                for (Py_ssize_t j = 0; j < x->v_len; j++) {
                    char c = x->v[j];
                    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return 0;
                }
                v->s = x->v;
                v->n = x->v_len;
                v->obj = NULL;
                break;
        }
    }
    for (int j = 0; j < ks->n_fields; j++) {
        if (seen & (1u << j)) continue;
        const FieldSpec *f = &ks->fields[j];
        if (f->required) return 0;
        Value *v = &vals[j];
        v->present = 0;
        v->owned = NULL;
        v->is_null = f->default_obj == Py_None;
        v->obj = f->default_obj;
        v->i = f->default_int;
        v->f = f->default_float;
        v->b = f->default_obj == Py_True;
    }
    return 1;
}

/* ---- the stores: the same operations as CounterStore.inc and HistogramStore.observe - */
/* bisect_left(bounds, value): the first bound >= value, the +Inf bucket past them. */
static inline Py_ssize_t bucket_of(const Store *st, double value) {
    Py_ssize_t lo = 0, hi = st->n_bounds;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (st->bounds[mid] < value) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* A label set not in the store yet is never created here: the store's Python slow path
   (add_new, row, _Tracked.open) admits it, or folds it into "other" past the per-metric
   cap or the total sample budget, which it charges. So both paths fold alike, and in the
   same order, since the handlers here make the Python handlers' calls in their order. */
static int counter_inc(Store *st, PyObject *key, double amount) {
    PyObject *old = PyDict_GetItemWithError(st->values, key);
    if (old) {
        double d = PyFloat_AsDouble(old);
        if (d == -1.0 && PyErr_Occurred()) return -1;
        PyObject *now = PyFloat_FromDouble(d + amount);
        if (!now) return -1;
        int rc = PyDict_SetItem(st->values, key, now);
        Py_DECREF(now);
        return rc;
    }
    if (PyErr_Occurred()) return -1;
    PyObject *amt = PyFloat_FromDouble(amount);
    if (!amt) return -1;
    PyObject *r = PyObject_CallFunctionObjArgs(st->slow, key, amt, NULL);
    Py_DECREF(amt);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

static int add_to_item(PyObject *row, Py_ssize_t i, double amount) {
    double d = PyFloat_AsDouble(PyList_GET_ITEM(row, i));
    if (d == -1.0 && PyErr_Occurred()) return -1;
    PyObject *now = PyFloat_FromDouble(d + amount);
    if (!now) return -1;
    return PyList_SetItem(row, i, now); /* steals `now` */
}

static int hist_observe(Store *st, PyObject *key, double value) {
    PyObject *row = PyDict_GetItemWithError(st->values, key);
    if (row && PyList_CheckExact(row) && PyList_GET_SIZE(row) == st->n_bounds + 2) {
        Py_INCREF(row);
    } else {
        if (PyErr_Occurred()) return -1;
        row = PyObject_CallOneArg(st->slow, key);
        if (!row) return -1;
        if (!PyList_CheckExact(row) || PyList_GET_SIZE(row) != st->n_bounds + 2) {
            Py_DECREF(row);
            PyErr_SetString(PyExc_TypeError, "histogram row of the wrong shape");
            return -1;
        }
    }
    int rc = add_to_item(row, bucket_of(st, value), 1.0);
    if (rc == 0) rc = add_to_item(row, st->n_bounds + 1, value);
    Py_DECREF(row);
    return rc;
}

/* ---- the shadows ------------------------------------------------------------------ */
static int is_histogram(const Store *st) { return st->bounds != NULL; }

/* Writes one loaded cell (already off the dirty list) back into its store: the counter's
   value, or the histogram entries it changed. */
static int write_back(Lines *self, Cell *c) {
    int rc = 0;
    Store *st = &self->stores[c->store];
    c->next_dirty = NULL;
    c->dirty = 0;
    if (!is_histogram(st)) {
        PyObject *v = PyFloat_FromDouble(c->vals[0]);
        if (!v || PyDict_SetItem(st->values, c->key, v) < 0) rc = -1;
        Py_XDECREF(v);
    } else {
        for (Py_ssize_t i = 0; i < st->n_bounds + 2; i++) {
            if (!(c->touched & ((uint64_t)1 << i))) continue;
            PyObject *v = PyFloat_FromDouble(c->vals[i]);
            if (!v || PyList_SetItem(c->row, i, v) < 0) rc = -1;
        }
        Py_CLEAR(c->row);
        Py_CLEAR(c->exrow);
    }
    c->touched = 0;
    return rc;
}

/* Writes every loaded shadow back into its store and starts a new epoch (so the next use
   of any cell loads it afresh). On error the rest are still written. */
static int flush(Lines *self) {
    int rc = 0;
    if (!self->dirty) return 0; /* no cell is loaded in this epoch */
    while (self->dirty) {
        Cell *c = self->dirty;
        self->dirty = c->next_dirty;
        if (write_back(self, c) < 0) rc = -1;
    }
    self->epoch++;
    return rc;
}

/* Writes back the loaded cells of one store only, before Python code that touches just
   that store (admitting a new label set, or folding it into "other"); the other stores'
   cells stay loaded. */
static int flush_store(Lines *self, int store) {
    int rc = 0;
    Cell **link = &self->dirty;
    while (*link) {
        Cell *c = *link;
        if (c->store != store) {
            link = &c->next_dirty;
            continue;
        }
        *link = c->next_dirty;
        c->epoch = 0; /* stale: loaded again on its next use */
        if (write_back(self, c) < 0) rc = -1;
    }
    return rc;
}

static void free_cell(Cell *c) {
    for (int i = 0; i < c->n; i++) Py_XDECREF(c->items[i]);
    Py_XDECREF(c->key);
    Py_XDECREF(c->row);
    Py_XDECREF(c->exrow);
    PyMem_Free(c);
}

static void free_slot(Slot *sl) {
    for (int i = 0; i < MAX_FIELDS; i++) Py_XDECREF(sl->strs[i]);
    Py_XDECREF(sl->tracked_key);
    PyMem_Free(sl);
}

/* Drops every cell, and the slots that point at them. */
static void drop_cells(Lines *self) {
    if (self->slots) {
        for (int i = 0; i < SLOT_CACHE; i++) {
            Slot *sl = self->slots[i];
            if (sl == self->slot) self->orphan = sl; /* its handler still borrows from it */
            else if (sl) free_slot(sl);
            self->slots[i] = NULL;
        }
    }
    self->slot = NULL;
    for (int b = 0; b < CELL_BUCKETS; b++) {
        Cell *c = self->cells[b];
        while (c) {
            Cell *next = c->next;
            free_cell(c);
            c = next;
        }
        self->cells[b] = NULL;
    }
    self->n_cells = 0;
    self->dirty = NULL;
}

static int same_str(PyObject *a, PyObject *b) {
    if (a == b) return 1;
    Py_ssize_t n = PyUnicode_GET_LENGTH(a);
    return n == PyUnicode_GET_LENGTH(b) && PyUnicode_KIND(a) == PyUnicode_KIND(b) &&
           memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)(n * PyUnicode_KIND(a))) == 0;
}

/* The cell of (store, items), made on first sight; borrowed, NULL on error. */
static Cell *cell_of(Lines *self, int store, int n, PyObject **items) {
    Py_uhash_t h = 0x345678u + (Py_uhash_t)store;
    for (int i = 0; i < n; i++) {
        Py_hash_t x = PyObject_Hash(items[i]); /* cached in the str */
        if (x == -1) return NULL;
        h = (h ^ (Py_uhash_t)x) * 1000003u;
    }
    Cell **chain = &self->cells[(h ^ (h >> 17)) & (CELL_BUCKETS - 1)];
    for (Cell *c = *chain; c; c = c->next) {
        if (c->hash != (Py_hash_t)h || c->store != store || c->n != n) continue;
        int i = 0;
        while (i < n && same_str(c->items[i], items[i])) i++;
        if (i == n) return c;
    }
    if (self->n_cells >= MAX_CELLS) {
        if (flush(self) < 0) return NULL;
        drop_cells(self);
        chain = &self->cells[(h ^ (h >> 17)) & (CELL_BUCKETS - 1)];
    }
    Store *st = &self->stores[store];
    Py_ssize_t width = is_histogram(st) ? st->n_bounds + 2 : 1;
    Cell *c = PyMem_Calloc(1, sizeof(Cell) + (size_t)width * sizeof(double));
    if (!c) {
        PyErr_NoMemory();
        return NULL;
    }
    c->key = PyTuple_New(n);
    if (!c->key) {
        PyMem_Free(c);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        Py_INCREF(items[i]);
        c->items[i] = items[i];
        Py_INCREF(items[i]);
        PyTuple_SET_ITEM(c->key, i, items[i]);
    }
    c->hash = (Py_hash_t)h;
    c->store = store;
    c->n = n;
    c->epoch = self->epoch - 1;
    c->next = *chain;
    *chain = c;
    self->n_cells++;
    return c;
}

/* The cell of (store, the n labels in ap): the current slot's when it has it. A store
   fed twice by one event (token usage and tokens, by token type) has one cell per
   variant, told apart by the last label. */
static Cell *cell_args(Lines *self, int store, int n, va_list ap) {
    PyObject *items[5] = {NULL, NULL, NULL, NULL, NULL};
    for (int i = 0; i < n; i++) items[i] = va_arg(ap, PyObject *);
    Cell **at = NULL;
    if (self->slot) {
        PyObject *last = items[n - 1];
        int variant = last == self->s_output           ? 1
                      : last == self->s_cache_read     ? 2
                      : last == self->s_cache_creation ? 3
                      : last == self->s_reasoning      ? 4
                                                       : 0;
        at = &self->slot->cells[store * VARIANTS + variant];
        if (*at) return *at;
    }
    Cell *c = cell_of(self, store, n, items);
    if (at && c && self->slot) *at = c; /* (cell_of may have dropped the slots) */
    return c;
}

static void mark_loaded(Lines *self, Cell *c) {
    c->epoch = self->epoch;
    c->dirty = 1;
    c->next_dirty = self->dirty;
    self->dirty = c;
}

/* CounterStore.inc(key, amount) for key = the n labels that follow. */
static int inc(Lines *self, int store, double amount, int n, ...) {
    va_list ap;
    va_start(ap, n);
    Cell *c = cell_args(self, store, n, ap);
    va_end(ap);
    if (!c) return -1;
    Store *st = &self->stores[store];
    if (c->epoch != self->epoch) {
        PyObject *v = PyDict_GetItemWithError(st->values, c->key);
        if (!v || !PyFloat_CheckExact(v)) {
            /* not stored yet (admitted or folded by Python), or not a float */
            if (PyErr_Occurred() || flush_store(self, store) < 0) return -1;
            return counter_inc(st, c->key, amount);
        }
        c->vals[0] = PyFloat_AS_DOUBLE(v);
        mark_loaded(self, c);
    }
    c->vals[0] += amount;
    return 0;
}

static PyObject *str_of(Lines *self, int kind, int field, Value *v);

/* HistogramStore.offer_exemplar(key as stored, value, trace id, span id, now): after an
   observation of an event with a trace id, as the Python handlers do (handlers.stored_key:
   the key, or ``other`` when it folded; keys made here need no sanitizing). The store
   keeps a bucket's exemplar for exemplar_refresh seconds: when the one held in bucket
   ``lo`` is younger, the offer would change nothing, so it is not made (and the id strs
   are not built) -- the same test offer_exemplar makes, on the same state. */
/* Whether bucket ``lo`` of the exemplar row ``row`` holds an exemplar younger than
   exemplar_refresh (the offer would then change nothing). As offered it is (value, trace,
   span, ts); once scraped, Exemplar(labels, value, ts). */
static int held_fresh(Lines *self, PyObject *row, Py_ssize_t lo) {
    if (!PyList_CheckExact(row) || lo >= PyList_GET_SIZE(row)) return 0;
    PyObject *held = PyList_GET_ITEM(row, lo), *at = NULL;
    if (PyTuple_CheckExact(held) && PyTuple_GET_SIZE(held) == 4)
        at = PyTuple_GET_ITEM(held, 3);
    else if (PyTuple_Check(held) && PyTuple_GET_SIZE(held) == 3)
        at = PyTuple_GET_ITEM(held, 2);
    return at && PyFloat_CheckExact(at) &&
           self->now - PyFloat_AS_DOUBLE(at) < self->exemplar_refresh;
}

/* The call itself, with the event's id strs (made on its first offer). */
static int make_offer(Lines *self, Store *st, PyObject *key, double value) {
    if (!self->trace) {
        PyObject *t = str_of(self, self->trace_kind, self->trace_field, self->trace_val);
        PyObject *sp = t ? str_of(self, self->trace_kind, self->span_field, self->span_val) : NULL;
        if (!sp) return -1;
        self->trace = t;
        self->span = sp;
    }
    PyObject *v = PyFloat_FromDouble(value), *now = PyFloat_FromDouble(self->now), *r = NULL;
    if (v && now)
        r = PyObject_CallFunctionObjArgs(st->offer, key, v, self->trace, self->span, now, NULL);
    Py_XDECREF(v);
    Py_XDECREF(now);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

static int offer_exemplar(Lines *self, Store *st, PyObject *key, double value,
                          Py_ssize_t lo) {
    int stored = PyDict_Contains(st->values, key);
    if (stored < 0) return -1;
    if (!stored) {
        if (!st->other) {
            Py_ssize_t n = PyTuple_GET_SIZE(key);
            if (!(st->other = PyTuple_New(n))) return -1;
            for (Py_ssize_t i = 0; i < n; i++) PyTuple_SET_ITEM(st->other, i, Py_NewRef(self->s_other));
        }
        key = st->other;
    }
    PyObject *row = PyDict_GetItemWithError(st->exemplars, key);
    if (!row && PyErr_Occurred()) return -1;
    if (row && held_fresh(self, row, lo)) return 0;
    return make_offer(self, st, key, value);
}

/* offer_exemplar for a loaded cell (its key is stored: its row came from the store): the
   exemplar row is kept on the cell for the epoch, so a repeated offer costs no lookup. */
static int offer_loaded(Lines *self, Store *st, Cell *c, double value, Py_ssize_t lo) {
    PyObject *row = c->exrow_epoch == self->epoch ? c->exrow : NULL;
    if (!row) {
        row = PyDict_GetItemWithError(st->exemplars, c->key);
        if (!row) return PyErr_Occurred() ? -1 : make_offer(self, st, c->key, value);
        Py_XSETREF(c->exrow, Py_NewRef(row));
        c->exrow_epoch = self->epoch;
    }
    return held_fresh(self, row, lo) ? 0 : make_offer(self, st, c->key, value);
}

/* HistogramStore.observe(key, value) for key = the n labels that follow (and the exemplar
   offer when the event has a trace id). */
static int observe(Lines *self, int store, double value, int n, ...) {
    va_list ap;
    va_start(ap, n);
    Cell *c = cell_args(self, store, n, ap);
    va_end(ap);
    if (!c) return -1;
    Store *st = &self->stores[store];
    Py_ssize_t width = st->n_bounds + 2;
    if (c->epoch != self->epoch) {
        PyObject *row = PyDict_GetItemWithError(st->values, c->key);
        int ok = row && PyList_CheckExact(row) && PyList_GET_SIZE(row) == width;
        for (Py_ssize_t i = 0; ok && i < width; i++) {
            PyObject *x = PyList_GET_ITEM(row, i);
            if (PyFloat_CheckExact(x)) c->vals[i] = PyFloat_AS_DOUBLE(x); else ok = 0;
        }
        if (!ok) {
            if (PyErr_Occurred() || flush_store(self, store) < 0) return -1;
            if (hist_observe(st, c->key, value) < 0) return -1;
            return self->trace_val ? offer_exemplar(self, st, c->key, value, bucket_of(st, value))
                                   : 0;
        }
        Py_INCREF(row);
        c->row = row;
        mark_loaded(self, c);
    }
    Py_ssize_t lo = bucket_of(st, value);
    c->vals[lo] += 1.0;
    c->vals[width - 1] += value;
    c->touched |= ((uint64_t)1 << lo) | ((uint64_t)1 << (width - 1));
    return self->trace_val ? offer_loaded(self, st, c, value, lo) : 0;
}

/* ---- the handlers: Aggregator._llm_call, _task, ... operation for operation -------- */
/* Borrowed reference to the str value of a string field, present or default. It lives
   as long as the line's handler runs: held by the spec (defaults, enum values), the
   current slot, or the line's Value (released after the handler). */
static PyObject *str_of(Lines *self, int kind, int field, Value *v) {
    if (v->obj) return v->obj;
    const FieldSpec *f = &self->kinds[kind].fields[field];
    PyObject **at = self->slot && f->cached ? &self->slot->strs[field] : NULL;
    if (at && *at) return *at;
    if (!v->owned && !(v->owned = make_str(self, v->s, v->n, f->cached))) return NULL;
    if (at) *at = Py_NewRef(v->owned);
    return v->owned;
}

/* The slot of this event's label combination (made on first sight), or NULL when its
   labels are too long to key one (the event is then applied without). */
static Slot *slot_of(Lines *self, int kind, const Value *vals) {
    const KindSpec *ks = &self->kinds[kind];
    char content[SLOT_CONTENT];
    Py_ssize_t len = 0;
    for (int j = 0; j < ks->n_fields; j++) {
        const FieldSpec *f = &ks->fields[j];
        const Value *v = &vals[j];
        if (f->type == F_ENUM) {
            /* the value object, by its index among the allowed values */
            int index = 0;
            while (index < f->n_enum && f->enum_objs[index] != v->obj) index++;
            content[len++] = (char)index;
        } else if (f->type == F_STR && f->cached) {
            if (!v->present) {
                content[len++] = (char)0xFF; /* the default */
                continue;
            }
            if (len + 1 + v->n > SLOT_CONTENT) return NULL;
            content[len++] = (char)v->n;
            memcpy(content + len, v->s, (size_t)v->n);
            len += v->n;
        }
        if (len >= SLOT_CONTENT - 1) return NULL;
    }
    uint64_t h = hash_bytes(content, len) ^ (uint64_t)kind;
    Slot **at = &self->slots[(h >> 7) & (SLOT_CACHE - 1)];
    Slot *sl = *at;
    if (sl && sl->hash == h && sl->kind == kind && sl->len == len &&
        memcmp(sl->content, content, (size_t)len) == 0)
        return sl;
    if (sl) free_slot(sl);
    *at = sl = PyMem_Calloc(1, sizeof(Slot));
    if (!sl) return NULL; /* no slot: slower, not wrong */
    sl->hash = h;
    sl->kind = kind;
    sl->len = len;
    memcpy(sl->content, content, (size_t)len);
    return sl;
}

#define STR(kind, field, name)                                  \
    PyObject *name = str_of(self, kind, field, &vals[field]); \
    if (!name) return -1;

/* New reference to the key of a tracked item, (a) or (a, b): the slot's when there is
   one, so an event whose labels were seen before makes no tuple. */
static PyObject *tracked_key(Lines *self, int n, PyObject *a, PyObject *b) {
    if (self->slot && self->slot->tracked_key) return Py_NewRef(self->slot->tracked_key);
    PyObject *key = n == 1 ? PyTuple_Pack(1, a) : PyTuple_Pack(2, a, b);
    if (key && self->slot) self->slot->tracked_key = Py_NewRef(key);
    return key;
}

static int dict_add(PyObject *d, PyObject *key, double amount) {
    PyObject *old = PyDict_GetItemWithError(d, key);
    double base = 0.0;
    if (old) {
        base = PyFloat_AsDouble(old);
        if (base == -1.0 && PyErr_Occurred()) return -1;
    } else if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *now = PyFloat_FromDouble(base + amount);
    if (!now) return -1;
    int rc = PyDict_SetItem(d, key, now);
    Py_DECREF(now);
    return rc;
}

/* Today's spend and the budgets (Aggregator.spend_for), fetched once a run. */
static int fetch_spend(Lines *self) {
    if (self->spend) return 0;
    PyObject *now = PyFloat_FromDouble(self->now);
    if (!now) return -1;
    PyObject *pair = PyObject_CallOneArg(self->spend_for, now);
    Py_DECREF(now);
    if (!pair) return -1;
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
        !PyDict_Check(PyTuple_GET_ITEM(pair, 0)) || !PyDict_Check(PyTuple_GET_ITEM(pair, 1))) {
        Py_DECREF(pair);
        PyErr_SetString(PyExc_TypeError, "spend_for must return two dicts");
        return -1;
    }
    self->spend = Py_NewRef(PyTuple_GET_ITEM(pair, 0));
    self->budgets = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
    Py_DECREF(pair);
    return 0;
}

/* The current event's trace and span ids (for the exemplar offers of its observations),
   or none when it has no trace id. Their strs are made by the first offer that is made. */
static int set_trace(Lines *self, int kind, int trace, int span, Value *vals) {
    self->trace = self->span = NULL;
    self->trace_val = self->span_val = NULL;
    if (!vals[trace].present || vals[trace].n == 0) return 0;
    self->trace_val = &vals[trace];
    self->span_val = &vals[span];
    self->trace_kind = kind;
    self->trace_field = trace;
    self->span_field = span;
    return 0;
}

/* The rates of (provider, model) into rates[] (PRICE_KNOWN) or PRICE_NONE: the slot's,
   asked of price_for (PriceTable.rates) on the slot's first event only. */
static int rates_of(Lines *self, PyObject *provider, PyObject *model, double *rates,
                    double *saving) {
    Slot *sl = self->slot;
    if (sl && sl->price != PRICE_UNKNOWN) {
        memcpy(rates, sl->rates, sizeof sl->rates);
        *saving = sl->saving;
        return sl->price;
    }
    PyObject *r = PyObject_CallFunctionObjArgs(self->price_for, provider, model, NULL);
    if (!r) return -1;
    int price = PRICE_NONE;
    *saving = 0.0;
    if (r != Py_None) {
        if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != NRATES) {
            Py_DECREF(r);
            PyErr_SetString(PyExc_TypeError, "price_for must return Rates or None");
            return -1;
        }
        for (int i = 0; i < NRATES; i++) rates[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(r, i));
        if (PyErr_Occurred()) {
            Py_DECREF(r);
            return -1;
        }
        price = PRICE_KNOWN;
        double saving_rate = rates[R_INPUT] - rates[R_CACHE_READ]; /* max(..., 0.0) */
        *saving = saving_rate > 0.0 ? saving_rate : 0.0;
    }
    Py_DECREF(r);
    if (sl) {
        sl->price = price;
        memcpy(sl->rates, rates, sizeof sl->rates);
        sl->saving = *saving;
    }
    return price;
}

static int handle_llm(Lines *self, Value *vals) {
    STR(K_LLM, L_OPERATION, op);
    STR(K_LLM, L_PROVIDER, provider);
    STR(K_LLM, L_MODEL, model);
    STR(K_LLM, L_ERROR, error);
    STR(K_LLM, L_RESPONSE_MODEL, response_model);
    STR(K_LLM, L_COMPONENT, agent);
    if (set_trace(self, K_LLM, L_TRACE, L_SPAN, vals) < 0) return -1;
    if (!vals[L_DURATION].is_null &&
        observe(self, S_LLM_DURATION, vals[L_DURATION].f, 5, op, provider, model, error,
                response_model) < 0)
        return -1;
    if (!vals[L_TTFT].is_null &&
        observe(self, S_LLM_TTFT, vals[L_TTFT].f, 3, op, provider, model) < 0)
        return -1;
    if (!vals[L_TPOC].is_null &&
        observe(self, S_LLM_TPOC, vals[L_TPOC].f, 3, op, provider, model) < 0)
        return -1;
    long long input = vals[L_IN].i, output = vals[L_OUT].i;
    double count = (double)input;
    if (count != 0.0 &&
        (observe(self, S_LLM_TOKEN_USAGE, count, 4, op, provider, model, self->s_input) < 0 ||
         inc(self, S_LLM_TOKENS, count, 3, provider, model, self->s_input) < 0 ||
         inc(self, S_AGENT_TOKENS, count, 3, agent, model, self->s_input) < 0))
        return -1;
    count = (double)output;
    if (count != 0.0 &&
        (observe(self, S_LLM_TOKEN_USAGE, count, 4, op, provider, model, self->s_output) < 0 ||
         inc(self, S_LLM_TOKENS, count, 3, provider, model, self->s_output) < 0 ||
         inc(self, S_AGENT_TOKENS, count, 3, agent, model, self->s_output) < 0))
        return -1;
    /* cache_read_input_tokens wins; the old name counts only when it is 0 / absent */
    long long cache_read = vals[L_CACHE_READ].i ? vals[L_CACHE_READ].i : vals[L_CACHED].i;
    long long cache_write = vals[L_CACHE_WRITE].i, reasoning = vals[L_REASONING].i;
    if (cache_read &&
        inc(self, S_LLM_TOKENS, (double)cache_read, 3, provider, model, self->s_cache_read) < 0)
        return -1;
    if (cache_write && inc(self, S_LLM_TOKENS, (double)cache_write, 3, provider, model,
                           self->s_cache_creation) < 0)
        return -1;
    if (reasoning &&
        inc(self, S_LLM_TOKENS, (double)reasoning, 3, provider, model, self->s_reasoning) < 0)
        return -1;
    PyObject *status = PyUnicode_GET_LENGTH(error) ? self->s_error : self->s_success;
    if (inc(self, S_LLM_REQUESTS, 1.0, 4, provider, model, status, error) < 0) return -1;
    double rates[NRATES], saving;
    int price = rates_of(self, provider, model, rates, &saving);
    if (price < 0) return -1;
    double cost = vals[L_COST].f;
    if (vals[L_COST].is_null) {
        if (price == PRICE_NONE) { /* no cost, no price: 0, and counted */
            PyObject *types[] = {self->s_input, self->s_output, self->s_cache_read,
                                 self->s_cache_creation, self->s_reasoning};
            long long counts[] = {input, output, cache_read, cache_write, reasoning};
            if (inc(self, S_LLM_UNPRICED_REQUESTS, 1.0, 2, provider, model) < 0) return -1;
            for (int i = 0; i < 5; i++) {
                if (counts[i] && inc(self, S_LLM_UNPRICED_TOKENS, (double)counts[i], 3,
                                     provider, model, types[i]) < 0)
                    return -1;
            }
            return 0;
        }
        /* Rates.cost, in its order (built with -ffp-contract=off: no fused multiply-add) */
        long long uncached = input - cache_read - cache_write;
        long long plain_output = output - reasoning;
        if (uncached < 0) uncached = 0;
        if (plain_output < 0) plain_output = 0;
        cost = (double)uncached * rates[R_INPUT];
        cost = cost + (double)cache_read * rates[R_CACHE_READ];
        cost = cost + (double)cache_write * rates[R_CACHE_WRITE];
        cost = cost + (double)plain_output * rates[R_OUTPUT];
        cost = cost + (double)reasoning * rates[R_REASONING];
    }
    if (cache_read && saving != 0.0 &&
        inc(self, S_LLM_CACHE_SAVINGS, (double)cache_read * saving, 2, provider, model) < 0)
        return -1;
    if (cost == 0.0) return 0;
    if (inc(self, S_LLM_COST, cost, 2, provider, model) < 0 || fetch_spend(self) < 0 ||
        dict_add(self->spend, self->s_total, cost) < 0)
        return -1;
    int budgeted = PyDict_GET_SIZE(self->budgets) ? PyDict_Contains(self->budgets, provider) : 0;
    return budgeted < 0 || (budgeted && dict_add(self->spend, provider, cost) < 0) ? -1 : 0;
}

/* _Tracked.close: forget ``item``; *since set (and 1 returned) when it was open. */
static int tracked_close(Tracked *t, PyObject *item, double *since) {
    PyObject *key = PyDict_GetItemWithError(t->where, item);
    if (!key) return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(key);
    int rc = -1;
    if (PyDict_DelItem(t->where, item) < 0) goto done;
    PyObject *group = PyDict_GetItemWithError(t->by_key, key);
    PyObject *at = group ? PyDict_GetItemWithError(group, item) : NULL;
    if (!at) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "tracked item without its group");
        goto done;
    }
    double d = PyFloat_AsDouble(at);
    if ((d == -1.0 && PyErr_Occurred()) || PyDict_DelItem(group, item) < 0) goto done;
    if (since) *since = d;
    rc = 1;
done:
    Py_DECREF(key);
    return rc;
}

/* _Tracked.open: here when its key is known and the id cap is not reached, else the
   Python method (which admits or folds the key, and evicts the oldest id). */
static int tracked_open(Lines *self, Tracked *t, PyObject *item, PyObject *key) {
    if (tracked_close(t, item, NULL) < 0) return -1;
    PyObject *now = PyFloat_FromDouble(self->now);
    if (!now) return -1;
    int rc = -1;
    PyObject *group = PyDict_GetItemWithError(t->by_key, key);
    if (group && PyDict_CheckExact(group) && PyDict_GET_SIZE(t->where) < t->limit) {
        if (PyDict_SetItem(t->where, item, key) == 0 && PyDict_SetItem(group, item, now) == 0)
            rc = 0;
    } else if (!PyErr_Occurred()) {
        PyObject *r = PyObject_CallFunctionObjArgs(t->open, item, key, now, NULL);
        if (r) {
            Py_DECREF(r);
            rc = 0;
        }
    }
    Py_DECREF(now);
    return rc;
}

/* The task moves from one tracked map to the other (or opens in it): closed in
   ``from``, opened in ``to`` under (component, queue). */
static int move_task(Lines *self, Tracked *from, Tracked *to, PyObject *tid,
                     PyObject *component, PyObject *queue) {
    if (tracked_close(from, tid, NULL) < 0) return -1;
    PyObject *key = tracked_key(self, 2, component, queue);
    if (!key) return -1;
    int rc = tracked_open(self, to, tid, key);
    Py_DECREF(key);
    return rc;
}

static int handle_task(Lines *self, Value *vals) {
    STR(K_TASK, T_COMPONENT, component);
    STR(K_TASK, T_QUEUE, queue);
    STR(K_TASK, T_ID, tid);
    PyObject *status = vals[T_STATUS].obj;
    Tracked *Q = &self->tracked[TR_QUEUED], *R = &self->tracked[TR_RUNNING];
    int has_id = PyUnicode_GET_LENGTH(tid) > 0;
    if (inc(self, S_TASKS, 1.0, 3, component, queue, status) < 0) return -1;
    if (status == self->s_queued || status == self->s_retried)
        return has_id ? move_task(self, R, Q, tid, component, queue) : 0;
    if (status == self->s_started)
        return has_id ? move_task(self, Q, R, tid, component, queue) : 0;
    int have_started = 0;
    double started = 0.0;
    if (has_id && (tracked_close(Q, tid, NULL) < 0 ||
                   (have_started = tracked_close(R, tid, &started)) < 0))
        return -1;
    double duration = vals[T_DURATION].f;
    if (vals[T_DURATION].is_null) {
        if (!have_started) return 0;
        duration = self->now - started;
        if (duration < 0.0) duration = 0.0;
    }
    if (set_trace(self, K_TASK, T_TRACE, T_SPAN, vals) < 0 ||
        observe(self, S_TASK_DURATION, duration, 3, component, queue, status) < 0)
        return -1;
    const Value *op = &vals[T_OPERATION];
    if (!(op->present && op->n == 12 && memcmp(op->s, "invoke_agent", 12) == 0)) return 0;
    /* error.type: empty for succeeded, else the status (failed, cancelled) */
    PyObject *error = status == self->s_succeeded ? self->s_empty : status;
    return observe(self, S_INVOKE_AGENT_DURATION, duration, 2, component, error);
}

static int handle_tool(Lines *self, Value *vals) {
    STR(K_TOOL, O_TOOL, tool);
    STR(K_TOOL, O_AGENT, agent);
    STR(K_TOOL, O_ERROR, error);
    STR(K_TOOL, O_TOOL_TYPE, tool_type);
    if (set_trace(self, K_TOOL, O_TRACE, O_SPAN, vals) < 0) return -1;
    if (!vals[O_DURATION].is_null &&
        observe(self, S_TOOL_DURATION, vals[O_DURATION].f, 4, tool, agent, error, tool_type) < 0)
        return -1;
    PyObject *status = PyUnicode_GET_LENGTH(error) ? self->s_error : self->s_success;
    return inc(self, S_TOOL_CALLS, 1.0, 4, tool, agent, status, tool_type);
}

static int handle_gate(Lines *self, Value *vals) {
    STR(K_GATE, G_GATE, gate);
    if (inc(self, S_GATE_DECISIONS, 1.0, 2, gate, vals[G_DECISION].obj) < 0) return -1;
    return vals[G_SCORE].is_null ? 0 : observe(self, S_GATE_SCORE, vals[G_SCORE].f, 1, gate);
}

static int handle_resolution(Lines *self, Value *vals) {
    STR(K_RES, R_COMPONENT, component);
    STR(K_RES, R_LOOP, loop);
    STR(K_RES, R_OUTCOME, outcome);
    PyObject *action = vals[R_ACTION].obj;
    Tracked *L = &self->tracked[TR_LOOPS];
    if (action == self->s_closed) {
        PyObject *how = PyUnicode_GET_LENGTH(outcome) ? outcome : self->s_resolved;
        return tracked_close(L, loop, NULL) < 0 ? -1
               : inc(self, S_RES_CLOSURES, 1.0, 2, component, how);
    }
    int open = PyDict_Contains(L->where, loop);
    if (open < 0) return -1;
    if (!open) {
        PyObject *key = tracked_key(self, 1, component, NULL);
        int rc = key ? tracked_open(self, L, loop, key) : -1;
        Py_XDECREF(key);
        if (rc < 0) return -1;
    }
    return inc(self, action == self->s_attempt ? S_RES_ATTEMPTS : S_RES_INCIDENTS, 1.0, 1,
               component);
}

static int handle_guardian(Lines *self, Value *vals) {
    STR(K_GUARD, D_GUARDIAN, guardian);
    STR(K_GUARD, D_TYPE, gtype);
    if (inc(self, S_GUARDIAN_DECISIONS, 1.0, 3, guardian, gtype, vals[D_VERDICT].obj) < 0)
        return -1;
    return vals[D_DURATION].is_null
               ? 0
               : observe(self, S_GUARDIAN_DURATION, vals[D_DURATION].f, 2, guardian, gtype);
}

static int handle_error(Lines *self, Value *vals) {
    STR(K_ERROR, E_COMPONENT, component);
    return inc(self, S_ERRORS, 1.0, 2, component, vals[E_CATEGORY].obj);
}

/* A delegated kind: the event struct from the validated values (absent fields take the
   struct's defaults, as in a decode), then the aggregator's handler for it. */
static int delegate(Lines *self, int kind, Value *vals) {
    KindSpec *ks = &self->kinds[kind];
    /* the Python handler must see the stores it touches as they are */
    if (ks->flushes && flush(self) < 0) return -1;
    int rc = -1;
    PyObject *kw = PyDict_New(), *event = NULL, *now = NULL, *r = NULL;
    if (!kw) return -1;
    for (int j = 0; j < ks->n_fields; j++) {
        Value *v = &vals[j];
        const FieldSpec *f = &ks->fields[j];
        if (!v->present) continue;
        PyObject *o;
        if (v->is_null) {
            o = Py_NewRef(Py_None);
        } else {
            switch (f->type) {
                case F_STR:
                case F_HEX: o = Py_XNewRef(str_of(self, kind, j, v)); break;
                case F_ENUM: o = Py_NewRef(v->obj); break;
                case F_INT: o = PyLong_FromLongLong(v->i); break;
                case F_FLOAT: o = PyFloat_FromDouble(v->f); break;
                default: o = PyBool_FromLong(v->b); break;
            }
        }
        if (!o) goto done;
        int set = PyDict_SetItem(kw, ks->field_keys[j], o);
        Py_DECREF(o);
        if (set < 0) goto done;
    }
    if (!(event = PyObject_Call(ks->cls, self->no_args, kw))) goto done;
    if (!(now = PyFloat_FromDouble(self->now))) goto done;
    if (!(r = PyObject_CallFunctionObjArgs(ks->handler, event, now, NULL))) goto done;
    rc = 0;
done:
    Py_XDECREF(r);
    Py_XDECREF(now);
    Py_XDECREF(event);
    Py_DECREF(kw);
    return rc;
}

typedef int (*Handler)(Lines *, Value *);
static const Handler HANDLERS[NKINDS] = {handle_llm, handle_task, handle_tool, handle_gate,
                                         handle_resolution, handle_guardian, handle_error};

/* ---- run --------------------------------------------------------------------------- */
/* Writes the shadows back and forgets what a run fetched: before the caller's Python
   code runs (a line for the Python path, the end of the batch). */
static int finish_run(Lines *self) {
    Py_CLEAR(self->spend);
    Py_CLEAR(self->budgets);
    return flush(self);
}

/* What one call of run / run_items / run_array shares: the batch clock, the counts per
   kind, the failures, and the parser's scratch space. */
typedef struct {
    PyObject *now_fn;
    int have_now;
    long long counts[MAX_KINDS];
    PyObject *failures;
    Entry entries[MAX_ENTRIES];
    Value vals[MAX_FIELDS];
    Hints hints;
} Run;

static int run_start(Run *r, PyObject *now_fn) {
    r->now_fn = now_fn;
    r->have_now = 0;
    memset(r->counts, 0, sizeof r->counts);
    memset(r->hints, -1, sizeof r->hints);
    r->failures = PyList_New(0);
    return r->failures ? 0 : -1;
}

enum { TAKEN = 1, BLANK = 0, NOT_TAKEN = -1, RUN_ERROR = -2 };

/* One JSON object in p..e (``limit``: how far 8-byte reads may go): validated and applied
   (TAKEN), blank (BLANK), left to the Python path (NOT_TAKEN), or RUN_ERROR when the
   batch clock failed (an exception is set). A handler that fails is counted in the
   failures, never stops the run. */
static int take_entries(Lines *self, Run *r, int n);

static int take_object(Lines *self, Run *r, const char *p, const char *e, const char *limit) {
    int n = split_object(p, e, limit, r->entries);
    if (n == 0) return BLANK;
    if (n < 0) return NOT_TAKEN;
    return take_entries(self, r, n);
}

/* take_object for the n entries already split into r->entries. */
static int take_entries(Lines *self, Run *r, int n) {
    Entry *entries = r->entries;
    Value *vals = r->vals;
    int kind = -1, kind_entry = -1;
    for (int i = 0; i < n; i++) {
        if (entries[i].key_len == 4 && memcmp(entries[i].key, "kind", 4) == 0) {
            if (kind_entry >= 0 || entries[i].vkind != V_STR) return NOT_TAKEN;
            kind_entry = i;
        }
    }
    if (kind_entry < 0) return NOT_TAKEN;
    const Entry *k = &entries[kind_entry];
    for (int j = 0; j < self->n_kinds; j++) {
        const KindSpec *ks = &self->kinds[j];
        if (ks->enabled && ks->name_len == k->v_len &&
            memcmp(ks->name, k->v, (size_t)k->v_len) == 0) {
            kind = j;
            break;
        }
    }
    if (kind < 0 || !validate(&self->kinds[kind], r->hints[kind], entries, n, kind_entry, vals))
        return NOT_TAKEN;
    if (!r->have_now) { /* the batch's time, read at its first event */
        PyObject *t = PyObject_CallNoArgs(r->now_fn);
        double d = t ? PyFloat_AsDouble(t) : -1.0;
        Py_XDECREF(t);
        if (d == -1.0 && PyErr_Occurred()) return RUN_ERROR;
        self->now = d;
        r->have_now = 1;
    }
    int rc;
    if (kind < NKINDS) {
        self->slot = slot_of(self, kind, vals);
        self->trace = self->span = NULL; /* set by the handlers of kinds with trace ids */
        self->trace_val = self->span_val = NULL;
        rc = HANDLERS[kind](self, vals);
        self->slot = NULL;
        self->trace = self->span = NULL;
        self->trace_val = self->span_val = NULL;
    } else {
        rc = delegate(self, kind, vals);
    }
    if (rc < 0) {
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        if (PyList_GET_SIZE(r->failures) < 16) {
            PyObject *pair = Py_BuildValue("sO", self->kinds[kind].name, exc ? exc : Py_None);
            if (!pair || PyList_Append(r->failures, pair) < 0) PyErr_Clear();
            Py_XDECREF(pair);
        }
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
    }
    for (int j = 0; j < self->kinds[kind].n_fields; j++) Py_CLEAR(vals[j].owned);
    if (self->orphan) {
        free_slot(self->orphan);
        self->orphan = NULL;
    }
    r->counts[kind]++;
    return TAKEN;
}

/* The counts per kind as a tuple (in kinds() order); NULL on error. */
static PyObject *run_counts(Lines *self, Run *r) {
    PyObject *tuple = PyTuple_New(self->n_kinds);
    for (int i = 0; tuple && i < self->n_kinds; i++) {
        PyObject *c = PyLong_FromLongLong(r->counts[i]);
        if (!c) {
            Py_CLEAR(tuple);
            break;
        }
        PyTuple_SET_ITEM(tuple, i, c);
    }
    return tuple;
}

/* Ends a call: the shadows written back when the Python path takes over (``stopped``)
   or on error; NULL (the failures released) when something failed. */
static int run_end(Lines *self, Run *r, int stopped, int error) {
    if ((stopped || error) && finish_run(self) < 0) error = 1;
    if (error) Py_CLEAR(r->failures);
    return error ? -1 : 0;
}

PyDoc_STRVAR(run_doc,
"run(body, pos, now, max_line) -> (pos, lines, counts, failures, stopped, end)\n\n"
"Apply the lines of ``body`` (complete lines, without the last newline) from offset\n"
"``pos``, with the aggregator's lock held by the caller; ``now()`` gives the batch's\n"
"time (called at the first event only). Stops at the first line this path does not\n"
"take (``stopped`` is then True, ``pos`` is where that line starts and ``end`` where it\n"
"ends; the shadows are written back first), else ``pos`` is len(body) + 1. ``lines``\n"
"counts the lines applied or blank, ``counts`` the events per kind (in ``kinds()``\n"
"order), ``failures`` (kind, exception) for the events whose handler failed (a bug,\n"
"never expected; the first 16). Call ``finish()`` when the batch is over.");

static PyObject *Lines_run(Lines *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t pos, max_line;
    PyObject *now_fn;
    if (!PyArg_ParseTuple(args, "y*nOn", &buf, &pos, &now_fn, &max_line)) return NULL;
    const char *base = buf.buf;
    Py_ssize_t size = buf.len, lines = 0, stop_end = size;
    int stopped = 0, error = 0;
    Run r;
    if (run_start(&r, now_fn) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    if (pos < 0) pos = 0;
    while (pos <= size) {
        const char *p = base + pos;
        const char *nl = memchr(p, '\n', (size_t)(size - pos));
        const char *e = nl ? nl : base + size;
        int took = e - p > max_line ? NOT_TAKEN : take_object(self, &r, p, e, base + size);
        if (took == RUN_ERROR) {
            error = 1;
            break;
        }
        if (took == NOT_TAKEN) {
            stopped = 1;
            stop_end = e - base;
            break;
        }
        lines++;
        pos = e - base + 1;
    }
    PyBuffer_Release(&buf);
    if (run_end(self, &r, stopped, error) < 0) return NULL;
    PyObject *counts = run_counts(self, &r);
    if (!counts) {
        Py_DECREF(r.failures);
        return NULL;
    }
    return Py_BuildValue("nnNNOn", pos, lines, counts, r.failures,
                         stopped ? Py_True : Py_False, stop_end);
}

PyDoc_STRVAR(run_items_doc,
"run_items(items, index, now, max_event) -> (index, taken, counts, failures, stopped)\n\n"
"Apply the single JSON objects ``items[index:]`` (bytes-like: Redis entries, push\n"
"elements) in order, as ``run`` does lines, until one this path does not take (blank,\n"
"over ``max_event`` bytes, or anything not certainly valid and simple): ``stopped`` is\n"
"then True and ``index`` is that item's, for the Python path to decode; else ``index``\n"
"is len(items). ``taken`` counts the items applied.");

static PyObject *Lines_run_items(Lines *self, PyObject *args) {
    PyObject *items, *now_fn;
    Py_ssize_t index, max_event;
    if (!PyArg_ParseTuple(args, "O!nOn", &PyList_Type, &items, &index, &now_fn, &max_event))
        return NULL;
    Py_ssize_t taken = 0;
    int stopped = 0, error = 0;
    Run r;
    if (run_start(&r, now_fn) < 0) return NULL;
    if (index < 0) index = 0;
    for (; index < PyList_GET_SIZE(items); index++) {
        PyObject *item = PyList_GET_ITEM(items, index);
        Py_buffer buf;
        int took;
        Py_INCREF(item); /* a handler could change the list */
        if (PyBytes_CheckExact(item)) {
            const char *p = PyBytes_AS_STRING(item);
            Py_ssize_t n = PyBytes_GET_SIZE(item);
            took = n > max_event ? NOT_TAKEN : take_object(self, &r, p, p + n, p + n);
        } else if (PyObject_GetBuffer(item, &buf, PyBUF_SIMPLE) == 0) {
            const char *p = buf.buf;
            took = buf.len > max_event ? NOT_TAKEN : take_object(self, &r, p, p + buf.len,
                                                                 p + buf.len);
            PyBuffer_Release(&buf);
        } else {
            PyErr_Clear(); /* not bytes-like: the Python path says why */
            took = NOT_TAKEN;
        }
        Py_DECREF(item);
        if (took == RUN_ERROR) {
            error = 1;
            break;
        }
        if (took != TAKEN) {
            stopped = 1;
            break;
        }
        taken++;
    }
    if (run_end(self, &r, stopped, error) < 0) return NULL;
    PyObject *counts = run_counts(self, &r);
    if (!counts) {
        Py_DECREF(r.failures);
        return NULL;
    }
    return Py_BuildValue("nnNNO", index, taken, counts, r.failures,
                         stopped ? Py_True : Py_False);
}

/* ---- JSON arrays: the elements as exporter.sources.push.split_array cuts them ------- */
static inline int is_space6(char c) { /* bytes.strip()'s whitespace */
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c';
}

/* The end of the item that starts at p: the first comma or ']' at depth 0, outside
   strings, or e; exactly the cut of split_array's tolerant scan (its _TOKEN regex:
   strings may be unterminated, a backslash escapes any byte, a stray '}' at depth 0 makes
   the depth negative). For a valid array it is the strict element too. */
static const char *item_end(const char *p, const char *e) {
    Py_ssize_t depth = 0;
    while (p < e) {
        char c = *p;
        if (c == '"') {
            p++;
            for (;;) {
                const char *q = p;
                while (q < e && *q != '"' && *q != '\\') q++;
                if (q >= e) return e; /* unterminated: the string runs to the end */
                if (*q == '"') {
                    p = q + 1;
                    break;
                }
                if (q + 1 >= e) { /* a lone backslash at the end: not a token */
                    p = e;
                    break;
                }
                p = q + 2;
            }
            continue;
        }
        if (c == '[' || c == '{') {
            depth++;
        } else if (c == ']' || c == '}') {
            if (depth == 0 && c == ']') return p;
            depth--;
        } else if (c == ',' && depth == 0) {
            return p;
        }
        p++;
    }
    return e;
}

PyDoc_STRVAR(run_array_doc,
"run_array(body, pos, state, index, now, max_event)\n"
"    -> (pos, state, taken, counts, failures, stopped, start, end)\n\n"
"Apply the elements of the JSON array ``body`` from ``pos``, cut as\n"
"exporter.sources.push.split_array cuts them (strict for a valid array, at the top-level\n"
"commas for a broken one, anything after the closing bracket one more element).\n"
"``state`` 0: ``pos`` starts an element (the first call: just after the '['); 1: ``pos``\n"
"is just after the closing bracket; 2: done. ``index`` is the elements seen so far.\n"
"Stops at an element this path does not take: ``stopped`` True, body[start:end] (already\n"
"stripped) for the Python path, ``pos``/``state`` to call again with after it.");

static PyObject *Lines_run_array(Lines *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t pos, index, max_event;
    int state;
    PyObject *now_fn;
    if (!PyArg_ParseTuple(args, "y*ninOn", &buf, &pos, &state, &index, &now_fn, &max_event))
        return NULL;
    const char *base = buf.buf, *end = base + buf.len;
    Py_ssize_t taken = 0, s_off = 0, e_off = 0;
    int stopped = 0, error = 0;
    Run r;
    if (run_start(&r, now_fn) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    if (pos < 0 || pos > buf.len) pos = buf.len;
    const char *p = base + pos;
    while (state != 2) {
        const char *s = p, *t;
        if (state == 1) { /* after the closing bracket: the rest is one element, if any */
            while (s < end && is_space6(*s)) s++;
            t = end;
            while (t > s && is_space6(t[-1])) t--;
            state = 2;
            p = end;
            if (s == t) break;
            stopped = 1;
            s_off = s - base;
            e_off = t - base;
            break;
        }
        while (s < end && is_space6(*s)) s++;
        const char *sep = NULL;
        int took = NOT_TAKEN;
        if (s < end && *s == '{') {
            /* the common case: one flat object of plain values (so it holds no bracket,
               no escape, no comma outside its strings: split_array's cut is its end),
               then the separator */
            const char *after = NULL, *q;
            int n = parse_object(s, end, end, r.entries, &after);
            if (n > 0) {
                q = after;
                while (q < end && is_space6(*q)) q++;
                if (q < end && (*q == ',' || *q == ']')) {
                    sep = q;
                    t = after;
                    took = t - s > max_event ? NOT_TAKEN : take_entries(self, &r, n);
                }
            }
        }
        if (took == RUN_ERROR) {
            error = 1;
            break;
        }
        if (!sep) { /* not the common case: cut where split_array cuts */
            sep = item_end(s, end);
            t = sep;
            while (t > s && is_space6(t[-1])) t--;
            if (s == t && index == 0 && (sep == end || *sep == ']')) {
                /* "[]": no element at all */
                p = sep == end ? end : sep + 1;
                state = sep == end ? 2 : 1;
                continue;
            }
        }
        p = sep == end ? end : sep + 1;
        state = sep == end ? 2 : *sep == ']' ? 1 : 0;
        if (took != TAKEN) {
            stopped = 1;
            s_off = s - base;
            e_off = t - base;
            break;
        }
        taken++;
        index++;
    }
    PyBuffer_Release(&buf);
    if (run_end(self, &r, stopped, error) < 0) return NULL;
    PyObject *counts = run_counts(self, &r);
    if (!counts) {
        Py_DECREF(r.failures);
        return NULL;
    }
    return Py_BuildValue("ninNNOnn", (Py_ssize_t)(p - base), state, taken, counts, r.failures,
                         stopped ? Py_True : Py_False, s_off, e_off);
}

static PyObject *Lines_finish(Lines *self, PyObject *Py_UNUSED(ignored)) {
    if (finish_run(self) < 0) return NULL;
    Py_RETURN_NONE;
}

/* A tuple of str from C strings. */
static PyObject *names_tuple(const char *const *names, Py_ssize_t n) {
    PyObject *out = PyTuple_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        PyObject *name = PyUnicode_FromString(names[i]);
        if (!name) {
            Py_CLEAR(out);
            break;
        }
        PyTuple_SET_ITEM(out, i, name);
    }
    return out;
}

/* ---- construction ------------------------------------------------------------------ */
static int keep(Lines *self, PyObject *obj) { return PyList_Append(self->keep, obj); }

static int load_field(Lines *self, FieldSpec *f, const char *name, PyObject *desc) {
    /* desc: (type, nullable, required, min_len, max_len, ge, le, enum values, default) */
    const char *type;
    int nullable, required;
    PyObject *min_len, *max_len, *ge, *le, *values, *dflt;
    if (!PyArg_ParseTuple(desc, "sppOOOOOO", &type, &nullable, &required, &min_len,
                          &max_len, &ge, &le, &values, &dflt))
        return -1;
    f->name = name;
    f->name_len = (Py_ssize_t)strlen(name);
    /* ids (task_id, loop_id, ...) are unbounded: kept out of the string cache */
    f->cached = !(f->name_len >= 3 && strcmp(name + f->name_len - 3, "_id") == 0);
    f->nullable = nullable;
    f->required = required;
    f->min_len = min_len == Py_None ? 0 : PyLong_AsSsize_t(min_len);
    f->max_len = max_len == Py_None ? PY_SSIZE_T_MAX : PyLong_AsSsize_t(max_len);
    f->has_ge = ge != Py_None;
    f->has_le = le != Py_None;
    f->ge = f->has_ge ? PyFloat_AsDouble(ge) : 0.0;
    f->le = f->has_le ? PyFloat_AsDouble(le) : 0.0;
    if (PyErr_Occurred()) return -1;
    if (strcmp(type, "str") == 0) f->type = F_STR;
    else if (strcmp(type, "enum") == 0) f->type = F_ENUM;
    else if (strcmp(type, "int") == 0) f->type = F_INT;
    else if (strcmp(type, "float") == 0) f->type = F_FLOAT;
    else if (strcmp(type, "bool") == 0) f->type = F_BOOL;
    else if (strcmp(type, "hex") == 0) f->type = F_HEX;
    else {
        PyErr_Format(PyExc_ValueError, "field %s: unknown type %s", name, type);
        return -1;
    }
    if (f->type == F_ENUM) {
        if (!PyTuple_Check(values) || PyTuple_GET_SIZE(values) > MAX_ENUM) {
            PyErr_Format(PyExc_ValueError, "field %s: enum values must be a short tuple", name);
            return -1;
        }
        f->n_enum = (int)PyTuple_GET_SIZE(values);
        for (int i = 0; i < f->n_enum; i++) {
            PyObject *v = PyTuple_GET_ITEM(values, i);
            if (!PyUnicode_Check(v)) {
                PyErr_Format(PyExc_ValueError, "field %s: enum values must be str", name);
                return -1;
            }
            Py_INCREF(v);
            PyUnicode_InternInPlace(&v);
            if (keep(self, v) < 0) {
                Py_DECREF(v);
                return -1;
            }
            Py_DECREF(v); /* kept alive by self->keep */
            Py_ssize_t len;
            const char *bytes = PyUnicode_AsUTF8AndSize(v, &len);
            if (!bytes) return -1;
            f->enum_objs[i] = v;
            f->enum_bytes[i] = bytes;
            f->enum_lens[i] = len;
        }
    }
    if (dflt != Py_None && PyUnicode_Check(dflt) && f->type == F_ENUM) {
        /* the default as the very enum object, so identity checks hold for it too */
        for (int i = 0; i < f->n_enum; i++) {
            if (PyUnicode_Compare(f->enum_objs[i], dflt) == 0) dflt = f->enum_objs[i];
        }
    }
    if (keep(self, dflt) < 0) return -1;
    f->default_obj = dflt;
    f->default_int = 0;
    f->default_float = 0.0;
    if (f->type == F_INT && PyLong_Check(dflt)) f->default_int = PyLong_AsLongLong(dflt);
    if (f->type == F_FLOAT && (PyFloat_Check(dflt) || PyLong_Check(dflt)))
        f->default_float = PyFloat_AsDouble(dflt);
    if (PyErr_Occurred()) return -1;
    if (f->type == F_HEX && (f->min_len != f->max_len || f->max_len > MAX_STR ||
                             dflt == Py_None || !PyUnicode_Check(dflt) ||
                             PyUnicode_GET_LENGTH(dflt) != 0)) {
        PyErr_Format(PyExc_ValueError, "field %s: a hex field has one width and default \"\"",
                     name);
        return -1;
    }
    if ((f->type == F_STR || f->type == F_ENUM) && dflt != Py_None && !PyUnicode_Check(dflt)) {
        PyErr_Format(PyExc_ValueError, "field %s: a string field needs a str default", name);
        return -1;
    }
    return 0;
}

/* Kind k from spec[kind name] = {field: desc}; disabled unless its fields are exactly the
   ones the handler knows (a model change then falls back to Python, never misreads). */
static int load_kind(Lines *self, int k, PyObject *spec) {
    KindSpec *ks = &self->kinds[k];
    ks->enabled = 0;
    ks->name = KIND_NAMES[k];
    ks->name_len = (Py_ssize_t)strlen(ks->name);
    PyObject *fields = PyDict_GetItemString(spec, KIND_NAMES[k]);
    if (!fields) return 0;
    if (!PyDict_Check(fields)) {
        PyErr_Format(PyExc_TypeError, "spec[%s] must be a dict", KIND_NAMES[k]);
        return -1;
    }
    int n = 0;
    while (FIELD_NAMES[k][n]) n++;
    if (PyDict_Size(fields) != n) return 0;
    for (int i = 0; i < n; i++) {
        PyObject *desc = PyDict_GetItemString(fields, FIELD_NAMES[k][i]);
        if (!desc) return 0;
        if (load_field(self, &ks->fields[i], FIELD_NAMES[k][i], desc) < 0) return -1;
        if (ks->fields[i].type == F_STR && ks->fields[i].required == 0 &&
            ks->fields[i].default_obj == Py_None)
            return 0; /* an optional string without a default: not what handlers expect */
    }
    ks->n_fields = n;
    ks->enabled = 1;
    return 0;
}

/* The delegated kinds: delegate[name] = (struct type, handler), fields from spec[name]. */
static int load_delegated(Lines *self, PyObject *spec, PyObject *delegate) {
    Py_ssize_t pos = 0;
    PyObject *name, *pair;
    while (PyDict_Next(delegate, &pos, &name, &pair)) {
        if (!PyUnicode_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "delegate keys must be kind names");
            return -1;
        }
        Py_ssize_t len;
        const char *text = PyUnicode_AsUTF8AndSize(name, &len);
        if (!text) return -1;
        int native = 0;
        for (int k = 0; k < NKINDS; k++) native |= strcmp(KIND_NAMES[k], text) == 0;
        PyObject *fields = PyDict_GetItem(spec, name);
        if (native || !fields || !PyDict_Check(fields)) continue;
        if (self->n_kinds == MAX_KINDS || PyDict_Size(fields) > MAX_FIELDS) continue;
        KindSpec *ks = &self->kinds[self->n_kinds];
        memset(ks, 0, sizeof *ks);
        if (!PyArg_ParseTuple(pair, "OOp", &ks->cls, &ks->handler, &ks->flushes) ||
            keep(self, pair) < 0 ||
            keep(self, name) < 0)
            return -1;
        ks->name = text;
        ks->name_len = len;
        Py_ssize_t fpos = 0;
        PyObject *fname, *desc;
        int n = 0;
        while (PyDict_Next(fields, &fpos, &fname, &desc)) {
            const char *ftext = PyUnicode_Check(fname) ? PyUnicode_AsUTF8(fname) : NULL;
            if (!ftext) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "field names are str");
                return -1;
            }
            if (keep(self, fname) < 0 || load_field(self, &ks->fields[n], ftext, desc) < 0)
                return -1;
            ks->field_keys[n++] = fname;
        }
        ks->n_fields = n;
        ks->enabled = 1;
        self->n_kinds++;
    }
    return 0;
}

/* Whether ``labels`` (a tuple of str) is exactly the comma-separated ``expected``. */
static int labels_match(PyObject *labels, const char *expected) {
    if (!PyTuple_Check(labels)) return 0;
    const char *p = expected;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(labels); i++) {
        PyObject *label = PyTuple_GET_ITEM(labels, i);
        Py_ssize_t len;
        const char *text = PyUnicode_Check(label) ? PyUnicode_AsUTF8AndSize(label, &len) : NULL;
        if (!text) {
            PyErr_Clear();
            return 0;
        }
        if (i > 0 && *p++ != ',') return 0;
        if (strncmp(p, text, (size_t)len) != 0) return 0;
        p += len;
        if (*p != ',' && *p != '\0') return 0;
    }
    return *p == '\0';
}

/* table["stores"][name] = (labels, values dict, admit callable, bounds tuple or None):
   admit is the store's slow path for a label set not stored yet (CounterStore.add_new
   for counters, HistogramStore.row for histograms). */
static int load_store(Lines *self, int s, PyObject *stores) {
    Store *st = &self->stores[s];
    const char *name = STORE_NAMES[s];
    PyObject *desc = PyDict_GetItemString(stores, name);
    PyObject *labels, *values, *slow, *bounds, *offer, *exemplars;
    if (!desc) {
        PyErr_Format(PyExc_ValueError, "native table: no store %s", name);
        return -1;
    }
    if (!PyArg_ParseTuple(desc, "OO!OOOO", &labels, &PyDict_Type, &values, &slow, &bounds,
                          &offer, &exemplars))
        return -1;
    if (STORE_HISTOGRAM[s] && (!PyCallable_Check(offer) || !PyDict_Check(exemplars))) {
        PyErr_Format(PyExc_ValueError, "native table: store %s has no offer_exemplar and "
                     "exemplars dict", name);
        return -1;
    }
    if (!labels_match(labels, STORE_LABELS[s])) {
        PyErr_Format(PyExc_ValueError, "native table: store %s has labels %R, not (%s)",
                     name, labels, STORE_LABELS[s]);
        return -1;
    }
    if ((bounds != Py_None) != STORE_HISTOGRAM[s]) {
        PyErr_Format(PyExc_ValueError, "native table: store %s is %s a histogram here", name,
                     STORE_HISTOGRAM[s] ? "" : "not");
        return -1;
    }
    if (keep(self, desc) < 0) return -1;
    st->values = values;
    st->slow = slow;
    st->offer = offer;
    st->exemplars = exemplars;
    st->n_bounds = 0;
    st->bounds = NULL;
    if (bounds != Py_None) {
        PyObject *seq = PySequence_Fast(bounds, "bounds must be a sequence");
        if (!seq) return -1;
        st->n_bounds = PySequence_Fast_GET_SIZE(seq);
        if (st->n_bounds + 2 > 64) { /* the shadows track changed entries in 64 bits */
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "stores[%s]: over 62 buckets", name);
            return -1;
        }
        st->bounds = PyMem_Calloc((size_t)st->n_bounds + 1, sizeof(double));
        if (!st->bounds) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < st->n_bounds; i++) {
            st->bounds[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        }
        Py_DECREF(seq);
        if (PyErr_Occurred()) return -1;
    }
    return 0;
}

/* table["tracked"][name] = (labels, where, groups, open, limit): where maps an open item
   to its key, groups a key to {item: since} in opening order, open is _Tracked.open (for
   a new key, the id cap, eviction), limit the id cap. */
static int load_tracked(Lines *self, int t, PyObject *tracked) {
    PyObject *desc = PyDict_GetItemString(tracked, TRACKED_NAMES[t]), *labels;
    Tracked *tr = &self->tracked[t];
    if (!desc) {
        PyErr_Format(PyExc_ValueError, "native table: no tracked map %s", TRACKED_NAMES[t]);
        return -1;
    }
    if (!PyArg_ParseTuple(desc, "OO!O!On", &labels, &PyDict_Type, &tr->where, &PyDict_Type,
                          &tr->by_key, &tr->open, &tr->limit))
        return -1;
    if (!labels_match(labels, TRACKED_LABELS[t])) {
        PyErr_Format(PyExc_ValueError, "native table: tracked %s has labels %R, not (%s)",
                     TRACKED_NAMES[t], labels, TRACKED_LABELS[t]);
        return -1;
    }
    return keep(self, desc);
}

/* The table's version and histogram row layout are the ones this file was written for. */
static int check_table(PyObject *table) {
    PyObject *version = PyDict_GetItemString(table, "version");
    long v = version && PyLong_Check(version) ? PyLong_AsLong(version) : -1;
    if (v != CONTRACT_VERSION) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "native table version %R, this build knows %d",
                         version ? version : Py_None, CONTRACT_VERSION);
        return -1;
    }
    PyObject *row = PyDict_GetItemString(table, "histogram_row");
    Py_ssize_t n = 0;
    while (HISTOGRAM_ROW[n]) n++;
    int ok = row && PyTuple_Check(row) && PyTuple_GET_SIZE(row) == n;
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        PyObject *part = PyTuple_GET_ITEM(row, i);
        ok = PyUnicode_Check(part) && PyUnicode_CompareWithASCIIString(part, HISTOGRAM_ROW[i]) == 0;
    }
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "native table: histogram rows laid out as %R",
                     row ? row : Py_None);
        return -1;
    }
    return 0;
}

static int Lines_init(Lines *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"spec", "table", "delegate", NULL};
    PyObject *spec, *table, *delegate, *stores, *tracked, *spend_for;
    if (self->keep) {
        PyErr_SetString(PyExc_RuntimeError, "Lines is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!", kwlist, &PyDict_Type, &spec,
                                     &PyDict_Type, &table, &PyDict_Type, &delegate))
        return -1;
    if (check_table(table) < 0) return -1;
    stores = PyDict_GetItemString(table, "stores");
    tracked = PyDict_GetItemString(table, "tracked");
    spend_for = PyDict_GetItemString(table, "spend_for");
    PyObject *price_for = PyDict_GetItemString(table, "price_for");
    if (!stores || !PyDict_Check(stores) || !tracked || !PyDict_Check(tracked) || !spend_for ||
        !price_for || !PyCallable_Check(price_for)) {
        PyErr_SetString(PyExc_ValueError,
                        "native table: stores, tracked, spend_for and price_for needed");
        return -1;
    }
    self->price_for = price_for; /* held by the table, which `keep` holds */
    PyObject *refresh = PyDict_GetItemString(table, "exemplar_refresh_seconds");
    if (!refresh || !PyFloat_Check(refresh)) {
        PyErr_SetString(PyExc_ValueError, "native table: exemplar_refresh_seconds needed");
        return -1;
    }
    self->exemplar_refresh = PyFloat_AS_DOUBLE(refresh);
    if (!(self->keep = PyList_New(0))) return -1;
    if (keep(self, table) < 0) return -1;
    self->cache = PyMem_Calloc(CACHE_SIZE, sizeof(CacheEntry));
    self->cells = PyMem_Calloc(CELL_BUCKETS, sizeof(Cell *));
    self->slots = PyMem_Calloc(SLOT_CACHE, sizeof(Slot *));
    self->epoch = 1;
    if (!self->cache || !self->cells || !self->slots) {
        PyErr_NoMemory();
        return -1;
    }
    if (!(self->no_args = PyTuple_New(0))) return -1;
    for (int k = 0; k < NKINDS; k++) {
        if (load_kind(self, k, spec) < 0) return -1;
    }
    self->n_kinds = NKINDS;
    if (load_delegated(self, spec, delegate) < 0) return -1;
    for (int s = 0; s < NSTORES; s++) {
        if (load_store(self, s, stores) < 0) return -1;
    }
    for (int t = 0; t < NTRACKED; t++) {
        if (load_tracked(self, t, tracked) < 0) return -1;
    }
    self->spend_for = spend_for;
    if (keep(self, spend_for) < 0) return -1;
    struct { PyObject **slot; const char *text; } consts[] = {
        {&self->s_error, "error"}, {&self->s_success, "success"},
        {&self->s_input, "input"}, {&self->s_output, "output"},
        {&self->s_cache_read, "cache_read"}, {&self->s_cache_creation, "cache_creation"},
        {&self->s_reasoning, "reasoning"}, {&self->s_resolved, "resolved"},
        {&self->s_total, "total"}, {&self->s_other, "other"}, {&self->s_empty, ""},
        {NULL, NULL}};
    for (int i = 0; consts[i].slot; i++) {
        if (!(*consts[i].slot = PyUnicode_InternFromString(consts[i].text))) return -1;
    }
    /* Enum values compared by identity: the objects the validator hands out. */
    struct { PyObject **slot; int kind, field; const char *text; } enums[] = {
        {&self->s_queued, K_TASK, T_STATUS, "queued"},
        {&self->s_retried, K_TASK, T_STATUS, "retried"},
        {&self->s_started, K_TASK, T_STATUS, "started"},
        {&self->s_succeeded, K_TASK, T_STATUS, "succeeded"},
        {&self->s_closed, K_RES, R_ACTION, "closed"},
        {&self->s_attempt, K_RES, R_ACTION, "attempt"}, {NULL, 0, 0, NULL}};
    for (int i = 0; enums[i].slot; i++) {
        *enums[i].slot = Py_None; /* matches nothing when the kind is disabled */
        FieldSpec *f = &self->kinds[enums[i].kind].fields[enums[i].field];
        if (!self->kinds[enums[i].kind].enabled) continue;
        for (int j = 0; j < f->n_enum; j++) {
            if (strcmp(f->enum_bytes[j], enums[i].text) == 0) *enums[i].slot = f->enum_objs[j];
        }
        if (*enums[i].slot == Py_None) self->kinds[enums[i].kind].enabled = 0;
    }
    return 0;
}

static void Lines_dealloc(Lines *self) {
    for (int s = 0; s < NSTORES; s++) {
        PyMem_Free(self->stores[s].bounds);
        Py_XDECREF(self->stores[s].other);
    }
    if (self->cache) {
        for (int i = 0; i < CACHE_SIZE; i++) Py_XDECREF(self->cache[i].obj);
        PyMem_Free(self->cache);
    }
    if (self->cells) {
        drop_cells(self);
        PyMem_Free(self->cells);
    }
    PyMem_Free(self->slots);
    if (self->orphan) free_slot(self->orphan);
    Py_XDECREF(self->keep);
    Py_XDECREF(self->no_args);
    Py_XDECREF(self->spend);
    Py_XDECREF(self->budgets);
    PyObject **consts[] = {&self->s_error, &self->s_success, &self->s_input, &self->s_output,
                           &self->s_cache_read, &self->s_cache_creation, &self->s_reasoning,
                           &self->s_resolved, &self->s_total, &self->s_other, &self->s_empty};
    for (size_t i = 0; i < sizeof consts / sizeof *consts; i++) Py_XDECREF(*consts[i]);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A tuple of the names of the kinds known here (only the enabled ones, or all). */
static PyObject *kind_names(Lines *self, int only_enabled) {
    const char *names[MAX_KINDS];
    Py_ssize_t n = 0;
    for (int k = 0; k < self->n_kinds; k++) {
        if (!only_enabled || self->kinds[k].enabled) names[n++] = self->kinds[k].name;
    }
    return names_tuple(names, n);
}

static PyObject *Lines_enabled(Lines *self, PyObject *Py_UNUSED(ignored)) {
    return kind_names(self, 1);
}

static PyObject *Lines_kinds(Lines *self, PyObject *Py_UNUSED(ignored)) {
    return kind_names(self, 0);
}

static PyMethodDef Lines_methods[] = {
    {"run", (PyCFunction)Lines_run, METH_VARARGS, run_doc},
    {"run_items", (PyCFunction)Lines_run_items, METH_VARARGS, run_items_doc},
    {"run_array", (PyCFunction)Lines_run_array, METH_VARARGS, run_array_doc},
    {"finish", (PyCFunction)Lines_finish, METH_NOARGS,
     "Write the shadows back into the stores: the end of a batch."},
    {"enabled", (PyCFunction)Lines_enabled, METH_NOARGS,
     "The kinds this path takes (the rest go to the Python path)."},
    {"kinds", (PyCFunction)Lines_kinds, METH_NOARGS,
     "Every kind known here, in the order of run()'s counts."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject LinesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "exporter._lines.Lines",
    .tp_basicsize = sizeof(Lines),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The native JSONL line path bound to one aggregator's containers.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lines_init,
    .tp_dealloc = (destructor)Lines_dealloc,
    .tp_methods = Lines_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "exporter._lines",
    .m_doc = "The native JSONL line path of the AI aggregator.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__lines(void) {
    if (PyType_Ready(&LinesType) < 0) return NULL;
    if (!c_locale && !(c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0))) {
        return PyErr_NoMemory();
    }
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    /* the contract: its version, the histogram row layout and the table's names */
    struct { const char *name; const char *const *names; Py_ssize_t n; } lists[] = {
        {"STORES", STORE_NAMES, NSTORES}, {"TRACKED", TRACKED_NAMES, NTRACKED},
        {"HISTOGRAM_ROW", HISTOGRAM_ROW, 3}};
    for (size_t i = 0; i < sizeof lists / sizeof *lists; i++) {
        PyObject *names = names_tuple(lists[i].names, lists[i].n);
        if (!names || PyModule_AddObject(m, lists[i].name, names) < 0) {
            Py_XDECREF(names);
            goto fail;
        }
    }
    if (PyModule_AddIntConstant(m, "CONTRACT_VERSION", CONTRACT_VERSION) < 0) goto fail;
    Py_INCREF(&LinesType);
    if (PyModule_AddObject(m, "Lines", (PyObject *)&LinesType) < 0) {
        Py_DECREF(&LinesType);
        goto fail;
    }
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
