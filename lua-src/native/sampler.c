/*
 * memdiag allocation sampler: loaded into a running nginx worker with ffi.load,
 * armed and disarmed at runtime without restart.
 *
 * Arming rewrites the GOT entries (JUMP_SLOT / GLOB_DAT relocations) of
 * malloc, calloc, realloc, free, posix_memalign, memalign and aligned_alloc in
 * every loaded object except libc, ld.so, libgcc_s, the vDSO and this library,
 * so that calls go through the hooks below. Only slots that hold the global
 * definition (dlsym(RTLD_DEFAULT)) are rewritten; a slot holding anything else
 * (lazy PLT stub, another interposer) is left alone and counted. Read-only
 * pages (full RELRO) are made writable for the store and restored to their
 * exact protection from /proc/self/maps. Disarming writes every original value
 * back (only where the slot still holds our hook).
 *
 * Sampling: byte-based Poisson process per thread (mean interval configurable,
 * default 512 KiB): an allocation of n bytes is sampled with probability
 * 1 - exp(-n/mean) and then stands for n/p bytes and 1/p allocations.
 * posix_memalign / memalign / aligned_alloc (nginx pool blocks) are recorded in
 * full (weight 1) unless record_aligned is 0. A recorded allocation keeps its
 * backtrace (depth <= 32, glibc backtrace()). Live records are grouped by call
 * path; a free of a recorded pointer removes it. Frees of pointers never
 * recorded cost one relaxed load of a hash bucket head.
 *
 * Memory: all tables are one anonymous mapping made at the first arm and
 * reused; clearing gives the pages back (MADV_DONTNEED). Bounded tables:
 * full tables drop the record and count it.
 *
 * Thread safety: one mutex around table updates (taken only for recorded
 * allocations and frees of possibly recorded pointers), except the main
 * thread's nursery of recent records (lock-free, main thread only; readers
 * called on the main thread flush it first); per-thread sampling
 * state and a re-entrancy guard in initial-exec TLS (no allocation on access).
 * The library is never unloaded (-z nodelete, and pinned with RTLD_NODELETE at
 * first use): LuaJIT dlcloses ffi.load'ed libraries when the worker's Lua VM
 * is closed at exit, while slots may still point at the hooks. A hook reached
 * through a stale pointer after disarm just forwards to the real function.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <link.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <unwind.h>

#define MS_API  __attribute__((visibility("default")))
#define MS_TLS  __thread __attribute__((tls_model("initial-exec")))

#define MS_VERSION          2
#define MS_MAX_DEPTH        32
#define MS_DEFAULT_MEAN     (512 * 1024)
#define MS_NFUNCS           7
#define MS_MAX_SLOTS        2048
#define MS_MAX_OBJECTS      256
#ifndef MS_ENTRY_BITS                               /* overridable for tests of full tables */
#define MS_ENTRY_BITS       17                      /* 131072 live records */
#endif
#define MS_MAX_ENTRIES      (1u << MS_ENTRY_BITS)
#define MS_BUCKET_BITS      (MS_ENTRY_BITS + 1)
#define MS_NBUCKETS         (1u << MS_BUCKET_BITS)
#ifndef MS_MAX_STACKS
#define MS_MAX_STACKS       8192
#endif
#define MS_STACK_HASH       (MS_MAX_STACKS * 2)
#define MS_MAPS_BUF         (512 * 1024)
#define MS_MAX_REGIONS      4096
#define MS_CACHE_SET_BITS   10                      /* 1024 sets */
#define MS_CACHE_WAYS       4
#define MS_CACHE_ENTRIES    ((1u << MS_CACHE_SET_BITS) * MS_CACHE_WAYS)
#define MS_STACK_SPAN       (64ull * 1024 * 1024)   /* max distance hook frame .. outermost frame */

enum { F_MALLOC, F_CALLOC, F_REALLOC, F_FREE, F_POSIX_MEMALIGN, F_MEMALIGN, F_ALIGNED_ALLOC };

static const char *const fn_names[MS_NFUNCS] = {
    "malloc", "calloc", "realloc", "free", "posix_memalign", "memalign", "aligned_alloc"
};

typedef void *(*malloc_t)(size_t);
typedef void *(*calloc_t)(size_t, size_t);
typedef void *(*realloc_t)(void *, size_t);
typedef void  (*free_t)(void *);
typedef int   (*posix_memalign_t)(void **, size_t, size_t);
typedef void *(*memalign_t)(size_t, size_t);

/* ---- public structures (mirrored by lua-src/memdiag/deep/sampler/native.ts) ---- */

typedef struct {
    uint64_t mean_bytes;       /* sampling interval; 0 = 512 KiB */
    int32_t  depth;            /* frames kept, 1..32; 0 = 32 */
    int32_t  record_aligned;   /* 1 = every posix_memalign/memalign/aligned_alloc recorded */
} memdiag_sampler_opts_t;

typedef struct {
    int32_t  version;
    int32_t  armed;
    int32_t  objects;               /* objects seen at the last arm */
    int32_t  objects_patched;       /* objects with at least one rewritten slot */
    int32_t  slots_patched;         /* slots currently pointing at our hooks (armed) */
    int32_t  slots_foreign;         /* slots left alone: value not the global definition */
    int32_t  slots_unwritable;      /* slots whose page could not be found/made writable */
    int32_t  depth;
    int32_t  record_aligned;
    int32_t  pad;
    uint64_t mean_bytes;
    uint64_t arms;
    uint64_t disarms;
    uint64_t sampled;               /* sampled malloc-family allocations (this session) */
    uint64_t recorded_aligned;      /* aligned allocations recorded (this session) */
    uint64_t frees_matched;         /* recorded allocations freed */
    uint64_t live_entries;
    uint64_t live_stacks;
    uint64_t drops_entries;         /* record dropped: live table full */
    uint64_t drops_stacks;          /* record dropped: path table full */
    uint64_t reentrant;             /* allocations seen while already inside a hook */
    uint64_t self_bytes;            /* size of the table mapping (virtual) */
    uint64_t armed_ms;              /* milliseconds since arm (or armed duration when disarmed) */
    uint64_t backtrace_ns;          /* total time spent in backtrace() this session */
    uint64_t restore_mismatch;      /* disarm: slots changed by someone else, left alone */
    uint64_t unwinds;               /* full unwinds (stack cache misses) */
    uint64_t cache_hits;            /* call paths taken from the validated stack cache */
} memdiag_sampler_stats_t;

typedef struct {
    uint32_t id;
    uint32_t depth;
    uint32_t fn;
    uint32_t pad;
    uint64_t live_count;            /* recorded allocations alive */
    uint64_t live_bytes;            /* their requested bytes */
    uint64_t est_bytes;             /* estimated live bytes (scaled by sampling) */
    uint64_t est_count_milli;       /* estimated live allocations × 1000 */
    uint64_t total_count;           /* recorded allocations since arm (freed or not) */
    uint64_t total_bytes;
} memdiag_sampler_path_t;

typedef struct {
    uint64_t slot;                  /* address of the GOT entry */
    uint64_t value;                 /* its current value */
    uint64_t orig;                  /* value before arming (patched slots) or global definition (scan) */
    uint32_t fn;
    int32_t  obj;
} memdiag_sampler_slot_t;

/* ---- internal state ---- */

typedef struct {
    uint64_t ptr;
    uint64_t size;
    uint64_t w_bytes;
    uint32_t w_count_milli;
    uint32_t stack;                 /* stack index + 1 */
    uint32_t next;                  /* entry index + 1, 0 = end */
    uint32_t t_ms;                  /* ms since arm */
} ms_entry_t;

typedef struct {
    uint64_t hash;
    uint32_t depth;
    uint32_t fn;
    uint64_t live_count, live_bytes, est_bytes, est_count_milli, total_count, total_bytes;
    uint64_t w_count, w_bytes, w_est_bytes, w_est_count_milli;   /* window scratch */
    void    *frames[MS_MAX_DEPTH];
} ms_stack_t;

typedef struct {
    void    **slot;
    void     *orig;
    uint32_t  fn;
    int32_t   obj;
} ms_slot_t;

typedef struct {
    uintptr_t base;
    char      name[160];
    int32_t   patched;
    int32_t   skipped;              /* 1 = not touched (libc, ld.so, ourselves, ...) */
} ms_object_t;

typedef struct { uintptr_t start, end; int prot; } ms_region_t;

typedef struct {
    uint32_t  seq;                  /* seqlock: odd while being written */
    uint32_t  stack;                /* stack index + 1, 0 = empty */
    uint32_t  fn;
    uint32_t  n;
    uintptr_t ret0;
    uint32_t  off[MS_MAX_DEPTH];    /* return address k at anchor + off[k] */
    void     *ip[MS_MAX_DEPTH];
} ms_cache_t;

static void *real_fn[MS_NFUNCS];
static int   resolved;

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t arm_lock = PTHREAD_MUTEX_INITIALIZER;

static volatile int armed;
static uint64_t mean_bytes = MS_DEFAULT_MEAN;
static int      depth_max = MS_MAX_DEPTH;
static int      record_aligned = 1;
static uint64_t arm_ns, disarm_ns;
static uint64_t arm_ms, disarm_ms;          /* CLOCK_MONOTONIC_COARSE, for record ages */
static uint64_t n_arms, n_disarms;

static ms_slot_t   slots[MS_MAX_SLOTS];
static int         nslots;
static ms_object_t objects[MS_MAX_OBJECTS];          /* seen by the last arm */
static int         nobjects, objects_patched, slots_foreign, slots_unwritable;
static ms_object_t scan_objects[MS_MAX_OBJECTS];     /* seen by the last scan */
static int         nscan_objects;
static uint64_t    restore_mismatch;

/* tables: one mapping */
static unsigned char *table_mem;
static size_t         table_size;
static uint32_t      *buckets;       /* MS_NBUCKETS: entry index + 1 */
/*
 * One bit per bucket, set while the bucket holds a record. Every free() of the
 * process asks "is this pointer recorded?"; almost always the answer is no, and
 * a 32 KB bitmap answers that from L1/L2 where the 1 MB bucket array would miss.
 */
static uint64_t      *occupied;      /* MS_NBUCKETS / 64 */
static ms_entry_t    *entries;       /* MS_MAX_ENTRIES */
static uint32_t      *stack_index;   /* MS_STACK_HASH: stack index + 1 */
static ms_stack_t    *stacks;        /* MS_MAX_STACKS */
static ms_cache_t    *bt_cache;      /* MS_CACHE_ENTRIES */
static uint32_t       cache_clock;
static uint64_t       st_unwinds, st_cache_hits;
static uint32_t       entries_used, free_list, nstacks;
static uint64_t       live_entries;
static uint64_t       st_sampled, st_aligned, st_frees, st_drop_entries, st_drop_stacks, st_reentrant, st_bt_ns;

/*
 * Main-thread nursery (see "main-thread nursery" below): its header, one cache
 * line. table_gen is bumped by tables_reset under table_lock; the nursery's
 * records belong to generation gen and are dropped when the two differ. The
 * counters are the nursery's share of the session's statistics (main thread
 * only; readers add them).
 */
static struct {
    uint32_t table_gen;
    uint32_t gen;
    uint32_t head, tail;            /* insertion-order ring positions, free running */
    uint32_t live;                  /* records in the nursery */
    uint32_t total_hi;              /* nur_total rows in use */
    uint64_t sampled, aligned, cache_hits, frees;
} nur __attribute__((aligned(64)));

/* our own text, skipped at the top of backtraces */
static uintptr_t self_base, self_text_lo, self_text_hi;

/*
 * Text of the Lua module and of LuaJIT. A C function there may have been called
 * from a JIT-compiled trace (FFI calls such as ngx_http_lua_ffi_shdict_get), and
 * libgcc's unwinder aborts the process when it steps from such a frame into
 * trace machine code. Unwinding therefore stops at the first frame inside these
 * objects: the path ends at the Lua boundary, which is where it stops being C.
 */
#define MS_MAX_LUA_RANGES 8
static uintptr_t lua_lo[MS_MAX_LUA_RANGES], lua_hi[MS_MAX_LUA_RANGES];
static int lua_ranges;

/*
 * Executable segments of the ELF objects loaded at the last arm, sorted. The
 * unwinder is only allowed to step out of frames whose code is in one of
 * them: LuaJIT registers unwind info for its machine code (__register_frame),
 * and libgcc aborts the process on it when a hooked C function was called
 * through the FFI from a trace. Code outside every object (JIT traces, objects
 * loaded after arming) ends the path; it is kept as the last frame.
 * Two tables, flipped on arm, so a hook in flight on another thread never
 * reads a half-built one.
 */
#define MS_MAX_TEXT 1024
typedef struct { uintptr_t lo, hi; } ms_text_t;
static ms_text_t text_tab[2][MS_MAX_TEXT];
static int       text_n[2];
static int       text_cur;              /* published table, read lock-free */

static int text_cb(struct dl_phdr_info *info, size_t sz, void *data)
{
    (void) sz;
    int t = *(int *) data;
    for (int i = 0; i < info->dlpi_phnum && text_n[t] < MS_MAX_TEXT; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) && ph->p_memsz) {
            text_tab[t][text_n[t]].lo = info->dlpi_addr + ph->p_vaddr;
            text_tab[t][text_n[t]].hi = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
            text_n[t]++;
        }
    }
    return 0;
}

static int text_cmp(const void *a, const void *b)
{
    uintptr_t x = ((const ms_text_t *) a)->lo, y = ((const ms_text_t *) b)->lo;
    return x < y ? -1 : x > y;
}

/* caller holds arm_lock, not armed: fills the spare table and publishes it */
static void text_refresh(void)
{
    int t = !__atomic_load_n(&text_cur, __ATOMIC_ACQUIRE);
    text_n[t] = 0;
    dl_iterate_phdr(text_cb, &t);
    qsort(text_tab[t], (size_t) text_n[t], sizeof(ms_text_t), text_cmp);
    __atomic_store_n(&text_cur, t, __ATOMIC_RELEASE);
}

static int in_object_text(uintptr_t ip)
{
    int t = __atomic_load_n(&text_cur, __ATOMIC_ACQUIRE);
    const ms_text_t *tab = text_tab[t];
    int lo = 0, hi = text_n[t] - 1;
    while (lo <= hi) {
        int mid = (lo + hi) >> 1;
        if (ip < tab[mid].lo) hi = mid - 1;
        else if (ip >= tab[mid].hi) lo = mid + 1;
        else return 1;
    }
    return 0;
}

/* /proc/self/maps, parsed at arm/disarm */
static char        maps_buf[MS_MAPS_BUF];
static ms_region_t regions[MS_MAX_REGIONS];
static int         nregions;

static MS_TLS int      tls_guard;
static MS_TLS int      tls_init;
static MS_TLS int64_t  tls_countdown;
static MS_TLS uint64_t tls_rng;
static MS_TLS uintptr_t tls_stack_lo, tls_stack_hi;   /* this thread's stack mapping (0 = not looked up yet) */
static MS_TLS int      tls_role;                      /* 0 = not known yet, 1 = main thread (tid == pid), 2 = other */

/* ---- small helpers ---- */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static inline uint64_t coarse_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t) ts.tv_sec * 1000ull + (uint64_t) ts.tv_nsec / 1000000ull;
}

static inline uint32_t ptr_bucket(uint64_t p)
{
    return (uint32_t) (((p >> 4) * 0x9E3779B97F4A7C15ull) >> (64 - MS_BUCKET_BITS));
}

static inline uint64_t rng_next(void)
{
    uint64_t x = tls_rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    tls_rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static int64_t next_interval(void)
{
    double u = (double) ((rng_next() >> 11) + 1) * (1.0 / 9007199254740992.0); /* (0, 1] */
    double v = -log(u) * (double) mean_bytes;
    if (v < 1) v = 1;
    if (v > 1e15) v = 1e15;
    return (int64_t) v;
}

static void thread_init(void)
{
    uint64_t seed = now_ns() ^ ((uint64_t) (uintptr_t) &tls_rng << 17) ^ (uint64_t) getpid();
    tls_rng = seed ? seed : 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 4; i++) rng_next();
    tls_countdown = next_interval();
    tls_init = 1;
}

/* ---- tables ---- */

static int tables_map(void)
{
    if (table_mem) return 0;
    size_t sz = (size_t) MS_NBUCKETS * sizeof(uint32_t)
              + (size_t) MS_NBUCKETS / 8
              + (size_t) MS_MAX_ENTRIES * sizeof(ms_entry_t)
              + (size_t) MS_STACK_HASH * sizeof(uint32_t)
              + (size_t) MS_MAX_STACKS * sizeof(ms_stack_t)
              + (size_t) MS_CACHE_ENTRIES * sizeof(ms_cache_t);
    long pg = sysconf(_SC_PAGESIZE);
    sz = (sz + (size_t) pg - 1) & ~((size_t) pg - 1);
    void *m = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return -1;
    table_mem = m;
    table_size = sz;
    unsigned char *p = m;
    buckets = (uint32_t *) p;            p += (size_t) MS_NBUCKETS * sizeof(uint32_t);
    occupied = (uint64_t *) p;           p += (size_t) MS_NBUCKETS / 8;
    entries = (ms_entry_t *) p;          p += (size_t) MS_MAX_ENTRIES * sizeof(ms_entry_t);
    stack_index = (uint32_t *) p;        p += (size_t) MS_STACK_HASH * sizeof(uint32_t);
    stacks = (ms_stack_t *) p;           p += (size_t) MS_MAX_STACKS * sizeof(ms_stack_t);
    bt_cache = (ms_cache_t *) p;
    return 0;
}

/* caller holds table_lock */
static void tables_reset(void)
{
    if (!table_mem) return;
    /* zero pages come back on next touch; RSS is given back now */
    madvise(table_mem, table_size, MADV_DONTNEED);
    entries_used = 0;
    free_list = 0;
    __atomic_store_n(&nur.table_gen, nur.table_gen + 1, __ATOMIC_RELEASE);     /* the nursery's records are dropped */
    nstacks = 0;
    live_entries = 0;
    st_sampled = st_aligned = st_frees = st_drop_entries = st_drop_stacks = st_reentrant = st_bt_ns = 0;
    st_unwinds = st_cache_hits = 0;
}

static uint64_t frames_hash(void **f, int n, uint32_t fn)
{
    uint64_t h = 0xcbf29ce484222325ull ^ fn;
    for (int i = 0; i < n; i++) {
        h ^= (uint64_t) (uintptr_t) f[i];
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h ? h : 1;
}

/* caller holds table_lock; returns stack index + 1 or 0 when full */
static uint32_t stack_intern(void **f, int n, uint32_t fn, uint64_t h)
{
    uint32_t i = (uint32_t) (h & (MS_STACK_HASH - 1));
    for (uint32_t probe = 0; probe < MS_STACK_HASH; probe++, i = (i + 1) & (MS_STACK_HASH - 1)) {
        uint32_t s = stack_index[i];
        if (s == 0) {
            if (nstacks >= MS_MAX_STACKS) return 0;
            ms_stack_t *st = &stacks[nstacks];
            memset(st, 0, offsetof(ms_stack_t, frames));
            st->hash = h;
            st->depth = (uint32_t) n;
            st->fn = fn;
            memcpy(st->frames, f, (size_t) n * sizeof(void *));
            __atomic_store_n(&nstacks, nstacks + 1, __ATOMIC_RELEASE);     /* read without the lock by the nursery path */
            stack_index[i] = nstacks;
            return nstacks;
        }
        ms_stack_t *st = &stacks[s - 1];
        if (st->hash == h && st->depth == (uint32_t) n && st->fn == fn
            && memcmp(st->frames, f, (size_t) n * sizeof(void *)) == 0) {
            return s;
        }
    }
    return 0;
}

/*
 * caller holds table_lock: unlink every record of p (normally one; a stale one
 * is left when hooked memory was freed by code we do not hook and the address
 * came back)
 */
static void entry_remove_locked(uint64_t p)
{
    uint32_t b = ptr_bucket(p);
    uint32_t *link = &buckets[b];
    uint32_t guard = 0;
    while (*link && guard++ < MS_MAX_ENTRIES) {
        ms_entry_t *e = &entries[*link - 1];
        if (e->ptr == p) {
            uint32_t idx = *link;
            __atomic_store_n(link, e->next, __ATOMIC_RELEASE);
            if (e->stack) {
                ms_stack_t *st = &stacks[e->stack - 1];
                st->live_count--;
                st->live_bytes -= e->size;
                st->est_bytes -= e->w_bytes;
                st->est_count_milli -= e->w_count_milli;
            }
            e->ptr = 0;
            e->next = free_list;
            free_list = idx;
            live_entries--;
            st_frees++;
            continue;       /* link now points at the next record */
        }
        link = &e->next;
    }
    if (buckets[b] == 0) {
        uint64_t w = __atomic_load_n(&occupied[b >> 6], __ATOMIC_RELAXED);
        __atomic_store_n(&occupied[b >> 6], w & ~(1ull << (b & 63)), __ATOMIC_RELEASE);
    }
}

/* caller holds table_lock; returns 0, or -1 when the live table is full (counted) */
static int entry_insert_locked(uint64_t ptr, uint64_t size, uint64_t w_bytes, uint32_t w_count_milli,
                               uint32_t s, uint32_t t_ms, int add_total)
{
    uint32_t idx;
    if (free_list) {
        idx = free_list;
        free_list = entries[idx - 1].next;
    } else if (entries_used < MS_MAX_ENTRIES) {
        idx = ++entries_used;
    } else {
        st_drop_entries++;
        return -1;
    }
    ms_entry_t *e = &entries[idx - 1];
    e->ptr = ptr;
    e->size = size;
    e->w_bytes = w_bytes;
    e->w_count_milli = w_count_milli;
    e->stack = s;
    e->t_ms = t_ms;
    uint32_t b = ptr_bucket(ptr);
    e->next = buckets[b];
    __atomic_store_n(&buckets[b], idx, __ATOMIC_RELEASE);
    {
        /* writers hold table_lock: a plain read-modify-write of the word is enough */
        uint64_t w = __atomic_load_n(&occupied[b >> 6], __ATOMIC_RELAXED);
        __atomic_store_n(&occupied[b >> 6], w | (1ull << (b & 63)), __ATOMIC_RELEASE);
    }
    live_entries++;
    ms_stack_t *st = &stacks[s - 1];
    st->live_count++;
    st->live_bytes += size;
    st->est_bytes += w_bytes;
    st->est_count_milli += w_count_milli;
    if (add_total) {
        st->total_count++;
        st->total_bytes += size;
    }
    return 0;
}

static inline int occupied_bit(uint64_t p)
{
    uint32_t b = ptr_bucket(p);
    return (__atomic_load_n(&occupied[b >> 6], __ATOMIC_RELAXED) >> (b & 63)) & 1;
}

/* ---- main-thread nursery ----
 *
 * Most records made on the worker's main thread are request pool blocks,
 * freed within the same event. Recording them in the global table costs a
 * lock and five or six cache lines on each side (free list, bucket, bitmap
 * word, entry, path counters). The main thread (tid == pid, decided once per
 * thread) keeps its new records first in this small table instead, without a
 * lock: open addressing keyed by pointer (load <= 1/2), plus a ring in
 * insertion order. When the ring is full, the oldest record still in the
 * nursery is promoted into the global table (under table_lock, as a record
 * was made before); a free() on the main thread looks here first (the
 * header line and one slot line) and just drops a record it finds.
 * Statics, not TLS: a dlopen'ed library has little static-TLS room.
 *
 * Counts: a path's total_count/total_bytes of nursery records are counted
 * when they enter, in nur_total (written by the main thread only,
 * taken back if the promotion finds the global table full, as a record that
 * did not fit was never counted); readers add them. live_count/live_bytes/
 * est_* are counted when a record is promoted. Every reader API flushes the
 * nursery first when called on the main thread (the agent calls them from
 * Lua, i.e. on the main thread), so its results are those of a single table.
 *
 * Other threads never look here: a main-thread record freed on another
 * thread stays in the nursery (and is promoted later) as a record freed by
 * code we do not hook stays in the global table. nginx allocates and frees
 * pool blocks on the thread that owns the pool (thread-pool tasks do not
 * create or destroy pools), so this does not happen there. A stale record
 * goes away when the address is freed again on the main thread: a free
 * removes the nursery record and, if the pointer's bitmap bit is set, every
 * global record of it, as before. A new record of an address that already
 * has one in the nursery (whose free we did not see) promotes the old one,
 * so both stay, as they would in the global table.
 *
 * tables_reset (arm, clear) bumps nur.table_gen; the main thread drops the
 * nursery's records and counters when it next sees the change.
 */
#define MS_NUR_RING   128
#define MS_NUR_BITS   8
#define MS_NUR_SLOTS  (1u << MS_NUR_BITS)       /* 2 x ring: load <= 1/2 */

typedef struct {
    uint64_t ptr;                   /* 0 = empty */
    uint64_t size;
    uint64_t w_bytes;
    uint32_t w_count_milli;
    uint32_t stack;
    uint32_t t_ms;
    uint32_t pos;                   /* ring position */
} ms_nur_t;

static ms_nur_t nur_slot[MS_NUR_SLOTS] __attribute__((aligned(64)));
static uint64_t nur_ring[MS_NUR_RING] __attribute__((aligned(64)));   /* pointer, 0 = freed */
/* per path (stack index): count and bytes of records that entered the nursery; dense, so the few hot paths share a line or two */
static uint64_t nur_total[MS_MAX_STACKS][2] __attribute__((aligned(64)));

static int role_init(void)
{
    tls_role = (pid_t) syscall(SYS_gettid) == getpid() ? 1 : 2;
    return tls_role;
}

static inline int on_main(void)
{
    int r = tls_role;
    return (r ? r : role_init()) == 1;
}

static inline uint32_t nur_home(uint64_t p)
{
    return (uint32_t) (((p >> 4) * 0x9E3779B97F4A7C15ull) >> (64 - MS_NUR_BITS));
}

/* main thread: drop the records of an older table generation */
static inline void nur_sync(void)
{
    uint32_t g = __atomic_load_n(&nur.table_gen, __ATOMIC_ACQUIRE);
    if (nur.gen == g) return;
    memset(nur_slot, 0, sizeof(nur_slot));
    memset(nur_ring, 0, sizeof(nur_ring));
    memset(nur_total, 0, (size_t) nur.total_hi * sizeof(nur_total[0]));
    nur.total_hi = 0;
    nur.head = nur.tail = nur.live = 0;
    nur.sampled = nur.aligned = nur.cache_hits = nur.frees = 0;
    nur.gen = g;
}

static inline int nur_find(uint64_t p)
{
    uint32_t i = nur_home(p);
    for (uint32_t k = 0; k < MS_NUR_SLOTS; k++, i = (i + 1) & (MS_NUR_SLOTS - 1)) {
        uint64_t q = nur_slot[i].ptr;
        if (q == p) return (int) i;
        if (q == 0) return -1;
    }
    return -1;
}

/* removes slot i (backward-shift deletion: no tombstones) */
static void nur_remove(uint32_t i)
{
    nur_ring[nur_slot[i].pos % MS_NUR_RING] = 0;
    nur.live--;
    uint32_t j = i;
    for (uint32_t k = 0; k < MS_NUR_SLOTS; k++) {
        j = (j + 1) & (MS_NUR_SLOTS - 1);
        if (nur_slot[j].ptr == 0) break;
        uint32_t h = nur_home(nur_slot[j].ptr);
        /* j may fill the hole at i unless its home lies cyclically in (i, j] */
        if (((j - h) & (MS_NUR_SLOTS - 1)) >= ((j - i) & (MS_NUR_SLOTS - 1))) {
            nur_slot[i] = nur_slot[j];
            i = j;
        }
    }
    nur_slot[i].ptr = 0;
}

/* caller holds table_lock: the record in slot i into the global table (the slot is left as is) */
static void nur_promote_locked(uint32_t i)
{
    ms_nur_t *e = &nur_slot[i];
    if (entry_insert_locked(e->ptr, e->size, e->w_bytes, e->w_count_milli, e->stack, e->t_ms, 0) != 0) {
        uint64_t *t = nur_total[e->stack - 1];
        __atomic_store_n(&t[0], t[0] - 1, __ATOMIC_RELAXED);
        __atomic_store_n(&t[1], t[1] - e->size, __ATOMIC_RELAXED);
    }
}

static void nur_promote(uint32_t i)
{
    pthread_mutex_lock(&table_lock);
    nur_promote_locked(i);
    pthread_mutex_unlock(&table_lock);
    nur_remove(i);
}

/* main thread, nur_sync done; s is a valid path */
static void nur_insert(uint64_t p, uint64_t size, uint64_t w_bytes, uint32_t w_count_milli, uint32_t s, uint32_t t_ms)
{
    int i = nur_find(p);
    if (i >= 0) nur_promote((uint32_t) i);      /* an older record of p whose free we did not see */
    if (nur.tail - nur.head >= MS_NUR_RING) {
        uint64_t old = nur_ring[nur.head % MS_NUR_RING];
        nur.head++;
        if (old && (i = nur_find(old)) >= 0) nur_promote((uint32_t) i);
    }
    uint32_t k = nur_home(p);
    while (nur_slot[k].ptr) k = (k + 1) & (MS_NUR_SLOTS - 1);     /* live <= ring size < slots */
    ms_nur_t *e = &nur_slot[k];
    e->ptr = p;
    e->size = size;
    e->w_bytes = w_bytes;
    e->w_count_milli = w_count_milli;
    e->stack = s;
    e->t_ms = t_ms;
    e->pos = nur.tail;
    nur_ring[nur.tail % MS_NUR_RING] = p;
    nur.tail++;
    nur.live++;
    uint64_t *t = nur_total[s - 1];
    if (s > nur.total_hi) nur.total_hi = s;
    __atomic_store_n(&t[0], t[0] + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&t[1], t[1] + size, __ATOMIC_RELAXED);
}

/* main thread: every record still in the nursery into the global table, oldest first */
static void nur_flush(void)
{
    if (!table_mem) return;
    nur_sync();
    if (nur.live) {
        pthread_mutex_lock(&table_lock);
        for (uint32_t pos = nur.head; pos != nur.tail; pos++) {
            uint64_t p = nur_ring[pos % MS_NUR_RING];
            int i;
            if (p && (i = nur_find(p)) >= 0) {
                nur_promote_locked((uint32_t) i);
                nur_remove((uint32_t) i);
            }
        }
        pthread_mutex_unlock(&table_lock);
    }
    nur.head = nur.tail;
}

/* readers: exact results on the main thread (see above) */
static inline void nur_flush_if_main(void)
{
    if (on_main()) nur_flush();
}

static void forget(void *ptr)
{
    uint64_t p = (uint64_t) (uintptr_t) ptr;
    if (on_main() && nur.live) {
        if (__atomic_load_n(&nur.table_gen, __ATOMIC_RELAXED) != nur.gen) {
            nur_sync();
        } else {
            int i = nur_find(p);
            if (i >= 0) {
                nur.frees++;
                nur_remove((uint32_t) i);
                /* falls through: a stale global record of p (see above) is removed as before */
            }
        }
    }
    if (!occupied_bit(p)) return;
    pthread_mutex_lock(&table_lock);
    entry_remove_locked(p);
    pthread_mutex_unlock(&table_lock);
}

/* ---- stack capture: full unwind plus a validated cache ----
 *
 * A full unwind (_Unwind_Backtrace) costs microseconds; pool blocks are
 * recorded on every request. The cache remembers, per call path, each return
 * address and where it sits on the stack relative to the hook's frame
 * (`anchor`). A later allocation reuses the path only if every one of those
 * stack words still holds the same return address, i.e. the same chain of
 * calls at the same frame sizes; anything else falls back to a full unwind.
 * Readers are lock-free (seqlock per entry); writers hold table_lock.
 */

typedef struct {
    void     **ips;
    uintptr_t *locs;
    int        n, max, ok;
    uintptr_t  last_cfa, anchor;
} uw_t;

static _Unwind_Reason_Code uw_cb(struct _Unwind_Context *ctx, void *arg)
{
    uw_t *u = arg;
    uintptr_t ip = (uintptr_t) _Unwind_GetIP(ctx);
    uintptr_t cfa = (uintptr_t) _Unwind_GetCFA(ctx);
    /* libgcc: the context's CFA is the one of the frame being returned from (the callee),
     * so the return address `ip` was pushed just below it */
    uintptr_t loc = cfa ? cfa - sizeof(void *) : 0;
    if (ip == 0) return _URC_END_OF_STACK;
    if (u->n == 0 && ip >= self_text_lo && ip < self_text_hi) return _URC_NO_REASON;   /* our own frames */
    u->ips[u->n] = (void *) ip;
    if (loc > u->anchor && loc - u->anchor < MS_STACK_SPAN && loc + sizeof(uintptr_t) <= tls_stack_hi
        && *(const uintptr_t *) loc == ip) u->locs[u->n] = loc;
    else u->ok = 0;
    u->last_cfa = cfa;
    if (++u->n >= u->max) return _URC_END_OF_STACK;
    if (!in_object_text(ip)) return _URC_END_OF_STACK;     /* JIT code or unknown: never step out of it */
    for (int i = 0; i < lua_ranges; i++) {
        if (ip >= lua_lo[i] && ip < lua_hi[i]) return _URC_END_OF_STACK;
    }
    return _URC_NO_REASON;
}

static __attribute__((noinline)) int unwind_full(void **ips, uintptr_t *locs, int max, uintptr_t anchor, int *cacheable)
{
    uw_t u = { ips, locs, 0, max, 1, 0, anchor };
    _Unwind_Backtrace(uw_cb, &u);
    *cacheable = u.ok && u.n > 0;
    return u.n;
}

static inline uint32_t cache_set(uintptr_t ret0, uint32_t fn)
{
    return (uint32_t) ((((uint64_t) ret0 ^ fn) * 0x9E3779B97F4A7C15ull) >> (64 - MS_CACHE_SET_BITS));
}

/*
 * This thread's stack mapping, once (pthread_getattr_np; its allocations are
 * libc-internal, never through our hooks). Fast-path reads stay inside
 * [anchor, hi) of this mapping; a frame on any other stack never takes it.
 */
static void thread_stack_bounds(void)
{
    pthread_attr_t at;
    void *addr = NULL;
    size_t size = 0;
    tls_stack_lo = 0;
    tls_stack_hi = 1;       /* "looked, nothing usable" */
    if (pthread_getattr_np(pthread_self(), &at) != 0) return;
    if (pthread_attr_getstack(&at, &addr, &size) == 0 && addr && size) {
        tls_stack_lo = (uintptr_t) addr;
        tls_stack_hi = (uintptr_t) addr + size;
    }
    pthread_attr_destroy(&at);
}

/* returns stack index + 1 of a validated cached path, or 0 */
static uint32_t cache_lookup(uintptr_t anchor, uintptr_t ret0, uint32_t fn)
{
    uintptr_t hi = tls_stack_hi;
    if (!bt_cache || anchor < tls_stack_lo || anchor >= hi) return 0;
    ms_cache_t *set = &bt_cache[(size_t) cache_set(ret0, fn) * MS_CACHE_WAYS];
    for (int w = 0; w < MS_CACHE_WAYS; w++) {
        ms_cache_t *e = &set[w];
        uint32_t s1 = __atomic_load_n(&e->seq, __ATOMIC_ACQUIRE);
        if ((s1 & 1) || e->stack == 0 || e->ret0 != ret0 || e->fn != fn) continue;
        uint32_t n = e->n;
        if (n == 0 || n > MS_MAX_DEPTH) continue;
        uint32_t k;
        for (k = 0; k < n; k++) {
            uint32_t off = e->off[k];
            if (off >= hi - anchor - sizeof(uintptr_t) + 1) break;      /* outside the live stack */
            if (*(const uintptr_t *) (anchor + off) != (uintptr_t) e->ip[k]) break;
        }
        if (k != n) continue;
        uint32_t id = e->stack;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&e->seq, __ATOMIC_RELAXED) != s1) continue;
        return id;
    }
    return 0;
}

/* caller holds table_lock */
static void cache_store(uintptr_t anchor, void **ips, uintptr_t *locs, int n, uint32_t fn, uint32_t stack)
{
    if (!bt_cache || n <= 0) return;
    ms_cache_t *set = &bt_cache[(size_t) cache_set((uintptr_t) ips[0], fn) * MS_CACHE_WAYS];
    ms_cache_t *e = &set[cache_clock++ % MS_CACHE_WAYS];
    for (int w = 0; w < MS_CACHE_WAYS; w++) {
        if (set[w].stack == 0) { e = &set[w]; break; }
    }
    __atomic_store_n(&e->seq, e->seq + 1, __ATOMIC_RELAXED);      /* odd: being written */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    e->ret0 = (uintptr_t) ips[0];
    e->fn = fn;
    e->n = (uint32_t) n;
    for (int k = 0; k < n; k++) {
        e->ip[k] = ips[k];
        e->off[k] = (uint32_t) (locs[k] - anchor);
    }
    e->stack = stack;
    __atomic_store_n(&e->seq, e->seq + 1, __ATOMIC_RELEASE);      /* even: stable */
}

static void record(void *ptr, size_t size, uint32_t fn, int sampled, uintptr_t anchor, uintptr_t ret0)
{
    void *ips[MS_MAX_DEPTH];
    uintptr_t locs[MS_MAX_DEPTH];
    int n = 0, cacheable = 0;
    uint64_t w_bytes, bt = 0;
    uint32_t w_count_milli, s;

    tls_guard = 1;
    s = cache_lookup(anchor, ret0, fn);
    if (s == 0) {
        uint64_t t0 = now_ns();
        if (tls_stack_hi == 0) thread_stack_bounds();
        n = unwind_full(ips, locs, depth_max, anchor, &cacheable);
        bt = now_ns() - t0;
    }

    if (sampled) {
        double pr = 1.0 - exp(-(double) size / (double) mean_bytes);
        if (pr < 1e-12) pr = 1e-12;
        double wb = (double) size / pr;
        double wc = 1000.0 / pr;
        w_bytes = (uint64_t) (wb + 0.5);
        w_count_milli = wc > 4e9 ? 4000000000u : (uint32_t) (wc + 0.5);
    } else {
        w_bytes = size;
        w_count_milli = 1000;
    }

    uint64_t nowc = coarse_ms();
    uint32_t t_ms = (uint32_t) (nowc > arm_ms ? nowc - arm_ms : 0);

    /* main thread, path from the stack cache: into the nursery, no lock */
    if (s != 0 && on_main() && s <= __atomic_load_n(&nstacks, __ATOMIC_ACQUIRE)) {
        nur_sync();
        nur.cache_hits++;
        if (sampled) nur.sampled++; else nur.aligned++;
        nur_insert((uint64_t) (uintptr_t) ptr, size, w_bytes, w_count_milli, s, t_ms);
        tls_guard = 0;
        return;
    }

    pthread_mutex_lock(&table_lock);
    if (s == 0) {
        st_bt_ns += bt;
        st_unwinds++;
        s = stack_intern(ips, n, fn, frames_hash(ips, n, fn));
        if (s != 0 && cacheable) cache_store(anchor, ips, locs, n, fn, s);
    } else if (s > nstacks) {
        s = 0;          /* cached before the tables were reset by a new arm */
    } else {
        st_cache_hits++;
    }
    if (sampled) st_sampled++; else st_aligned++;
    if (s == 0) st_drop_stacks++;
    else entry_insert_locked((uint64_t) (uintptr_t) ptr, size, w_bytes, w_count_milli, s, t_ms, 1);
    pthread_mutex_unlock(&table_lock);
    tls_guard = 0;
}

#define ANCHOR  ((uintptr_t) __builtin_frame_address(0))
#define RET0    ((uintptr_t) __builtin_return_address(0))

static inline __attribute__((always_inline)) int sample_now(size_t size)
{
    if (!tls_init) thread_init();
    tls_countdown -= (int64_t) size;
    if (tls_countdown > 0) return 0;
    tls_countdown = next_interval();
    return 1;
}

/* ---- hooks ---- */

static void *hook_malloc(size_t n)
{
    void *p = ((malloc_t) real_fn[F_MALLOC])(n);
    if (p && armed) {
        if (tls_guard) __atomic_fetch_add(&st_reentrant, 1, __ATOMIC_RELAXED);
        else if (sample_now(n)) record(p, n, F_MALLOC, 1, ANCHOR, RET0);
    }
    return p;
}

static void *hook_calloc(size_t n, size_t m)
{
    void *p = ((calloc_t) real_fn[F_CALLOC])(n, m);
    if (p && armed) {
        /* no overflow: calloc succeeded */
        if (tls_guard) __atomic_fetch_add(&st_reentrant, 1, __ATOMIC_RELAXED);
        else if (sample_now(n * m)) record(p, n * m, F_CALLOC, 1, ANCHOR, RET0);
    }
    return p;
}

static void *hook_realloc(void *old, size_t n)
{
    if (!armed || tls_guard) return ((realloc_t) real_fn[F_REALLOC])(old, n);
    /* forget first: once realloc returns, the old address may belong to another thread */
    if (old) forget(old);
    void *p = ((realloc_t) real_fn[F_REALLOC])(old, n);
    if (p && n && sample_now(n)) record(p, n, F_REALLOC, 1, ANCHOR, RET0);
    return p;
}

static void hook_free(void *p)
{
    /* also when disarmed: a record must not outlive its memory */
    if (p && buckets && !tls_guard) forget(p);
    ((free_t) real_fn[F_FREE])(p);
}

#define ALIGNED_DONE(p, size, fn)                                                   \
    do {                                                                            \
        if ((p) && armed) {                                                         \
            if (tls_guard) __atomic_fetch_add(&st_reentrant, 1, __ATOMIC_RELAXED); \
            else if (record_aligned) record((p), (size), (fn), 0, ANCHOR, RET0);    \
            else if (sample_now(size)) record((p), (size), (fn), 1, ANCHOR, RET0);  \
        }                                                                           \
    } while (0)

static int hook_posix_memalign(void **out, size_t align, size_t size)
{
    int rc = ((posix_memalign_t) real_fn[F_POSIX_MEMALIGN])(out, align, size);
    if (rc == 0) ALIGNED_DONE(*out, size, F_POSIX_MEMALIGN);
    return rc;
}

static void *hook_memalign(size_t align, size_t size)
{
    void *p = ((memalign_t) real_fn[F_MEMALIGN])(align, size);
    ALIGNED_DONE(p, size, F_MEMALIGN);
    return p;
}

static void *hook_aligned_alloc(size_t align, size_t size)
{
    void *p = ((memalign_t) real_fn[F_ALIGNED_ALLOC])(align, size);
    ALIGNED_DONE(p, size, F_ALIGNED_ALLOC);
    return p;
}

static void *const hook_fn[MS_NFUNCS] = {
    (void *) hook_malloc, (void *) hook_calloc, (void *) hook_realloc, (void *) hook_free,
    (void *) hook_posix_memalign, (void *) hook_memalign, (void *) hook_aligned_alloc
};

/* ---- ELF walk ---- */

static int self_cb(struct dl_phdr_info *info, size_t sz, void *data)
{
    (void) sz; (void) data;
    if (info->dlpi_addr != self_base) return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            self_text_lo = info->dlpi_addr + ph->p_vaddr;
            self_text_hi = self_text_lo + ph->p_memsz;
        }
    }
    return 1;
}

static int lua_cb(struct dl_phdr_info *info, size_t sz, void *data)
{
    (void) sz; (void) data;
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    if (!strstr(name, "ngx_http_lua_module") && !strstr(name, "ngx_stream_lua_module") && !strstr(name, "libluajit"))
        return 0;
    for (int i = 0; i < info->dlpi_phnum && lua_ranges < MS_MAX_LUA_RANGES; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            lua_lo[lua_ranges] = info->dlpi_addr + ph->p_vaddr;
            lua_hi[lua_ranges] = lua_lo[lua_ranges] + ph->p_memsz;
            lua_ranges++;
        }
    }
    return 0;
}

static int resolve(void)
{
    if (resolved) return 0;
    Dl_info di;
    if (!dladdr((void *) hook_malloc, &di)) return -1;
    self_base = (uintptr_t) di.dli_fbase;
    /*
     * Never unloaded: GOT slots (or pointers copied from them) may reach the
     * hooks until the process ends, also after the Lua VM that loaded us is
     * closed at worker exit (its clib finalizer calls dlclose). The build links
     * with -z nodelete as well; this pins a library built without it.
     */
    if (di.dli_fname && !dlopen(di.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE)) return -1;
    dl_iterate_phdr(self_cb, NULL);
    if (!self_text_lo) return -1;
    lua_ranges = 0;
    dl_iterate_phdr(lua_cb, NULL);
    for (int i = 0; i < MS_NFUNCS; i++) {
        real_fn[i] = dlsym(RTLD_DEFAULT, fn_names[i]);
    }
    if (!real_fn[F_MALLOC] || !real_fn[F_FREE] || !real_fn[F_CALLOC] || !real_fn[F_REALLOC]) return -1;
    /* load libgcc_s (backtrace's unwinder) now, outside any hook */
    void *tmp[4];
    uintptr_t locs[4];
    int c;
    backtrace(tmp, 4);
    unwind_full(tmp, locs, 4, 0, &c);
    resolved = 1;
    return 0;
}

static int read_maps(void)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, maps_buf + len, sizeof(maps_buf) - 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        len += (size_t) r;
        if (len >= sizeof(maps_buf) - 1) break;
    }
    close(fd);
    maps_buf[len] = 0;
    nregions = 0;
    char *p = maps_buf;
    while (*p && nregions < MS_MAX_REGIONS) {
        char *end;
        uintptr_t a = (uintptr_t) strtoull(p, &end, 16);
        if (*end != '-') break;
        uintptr_t b = (uintptr_t) strtoull(end + 1, &end, 16);
        if (*end != ' ') break;
        int prot = 0;
        if (end[1] == 'r') prot |= PROT_READ;
        if (end[2] == 'w') prot |= PROT_WRITE;
        if (end[3] == 'x') prot |= PROT_EXEC;
        regions[nregions].start = a;
        regions[nregions].end = b;
        regions[nregions].prot = prot;
        nregions++;
        char *nl = strchr(end, '\n');
        if (!nl) break;
        p = nl + 1;
    }
    return nregions > 0 ? 0 : -1;
}

static int region_prot(uintptr_t a)
{
    for (int i = 0; i < nregions; i++) {
        if (a >= regions[i].start && a < regions[i].end) return regions[i].prot;
    }
    return -1;
}

/* store v into the GOT slot; returns 0 on success */
static int write_slot(void **slot, void *v)
{
    uintptr_t a = (uintptr_t) slot;
    int prot = region_prot(a);
    if (prot < 0 || !(prot & PROT_READ)) return -1;
    if (prot & PROT_WRITE) {
        __atomic_store_n(slot, v, __ATOMIC_RELEASE);
        return 0;
    }
    long pg = sysconf(_SC_PAGESIZE);
    void *page = (void *) (a & ~((uintptr_t) pg - 1));
    size_t span = (size_t) pg;   /* slots are 8-aligned: never across a page */
    if (mprotect(page, span, prot | PROT_WRITE) != 0) return -1;
    __atomic_store_n(slot, v, __ATOMIC_RELEASE);
    mprotect(page, span, prot);
    return 0;
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int skip_object(const char *name, uintptr_t base)
{
    const char *b = base_name(name);
    if (base == self_base) return 1;
    if (strncmp(b, "libc.so", 7) == 0) return 1;
    if (strncmp(b, "ld-linux", 8) == 0 || strncmp(b, "ld64.so", 7) == 0) return 1;
    if (strncmp(b, "linux-vdso", 10) == 0 || strncmp(b, "linux-gate", 10) == 0) return 1;
    if (strncmp(b, "libgcc_s", 8) == 0) return 1;
    return 0;
}

#if defined(__x86_64__)
#define MS_R_JUMP_SLOT R_X86_64_JUMP_SLOT
#define MS_R_GLOB_DAT  R_X86_64_GLOB_DAT
#elif defined(__aarch64__)
#define MS_R_JUMP_SLOT R_AARCH64_JUMP_SLOT
#define MS_R_GLOB_DAT  R_AARCH64_GLOB_DAT
#else
#error "sampler: unsupported architecture"
#endif

typedef void (*slot_visitor_t)(void **slot, uint32_t fn, int obj, void *ctx);

static inline uintptr_t dyn_ptr(uintptr_t base, uintptr_t v)
{
    /* glibc relocates these d_ptr values in place; an unrelocated one is an offset */
    return v < base ? v + base : v;
}

static void walk_relocs(uintptr_t base, const ElfW(Rela) *rel, size_t relsz, const ElfW(Sym) *symtab,
                        const char *strtab, size_t strsz, int obj, slot_visitor_t visit, void *ctx)
{
    size_t n = relsz / sizeof(ElfW(Rela));
    for (size_t i = 0; i < n; i++) {
        uint32_t type = (uint32_t) ELF64_R_TYPE(rel[i].r_info);
        if (type != MS_R_JUMP_SLOT && type != MS_R_GLOB_DAT) continue;
        uint32_t si = (uint32_t) ELF64_R_SYM(rel[i].r_info);
        if (si == 0) continue;
        uint32_t off = symtab[si].st_name;
        if (strsz && off >= strsz) continue;
        const char *name = strtab + off;
        for (uint32_t f = 0; f < MS_NFUNCS; f++) {
            if (strcmp(name, fn_names[f]) == 0) {
                visit((void **) (base + rel[i].r_offset), f, obj, ctx);
                break;
            }
        }
    }
}

typedef struct {
    slot_visitor_t visit;
    void          *ctx;
    int            include_skipped;
    ms_object_t   *objs;
    int           *nobjs;
} walk_ctx_t;

static int walk_cb(struct dl_phdr_info *info, size_t sz, void *data)
{
    (void) sz;
    walk_ctx_t *w = data;
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    int skipped = skip_object(name, info->dlpi_addr);
    if (*w->nobjs >= MS_MAX_OBJECTS) return 0;
    int obj = (*w->nobjs)++;
    ms_object_t *o = &w->objs[obj];
    o->base = info->dlpi_addr;
    o->patched = 0;
    o->skipped = skipped;
    if (name[0] == 0 && obj == 0) {
        ssize_t r = readlink("/proc/self/exe", o->name, sizeof(o->name) - 1);
        o->name[r > 0 ? r : 0] = 0;
    } else {
        strncpy(o->name, name, sizeof(o->name) - 1);
        o->name[sizeof(o->name) - 1] = 0;
    }
    if (skipped && !w->include_skipped) return 0;

    const ElfW(Dyn) *dyn = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC) {
            dyn = (const ElfW(Dyn) *) (info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
        }
    }
    if (!dyn) return 0;
    uintptr_t base = info->dlpi_addr;
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    size_t strsz = 0, relasz = 0, pltrelsz = 0;
    const ElfW(Rela) *rela = NULL, *jmprel = NULL;
    long pltrel = DT_RELA;
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_SYMTAB: symtab = (const ElfW(Sym) *) dyn_ptr(base, d->d_un.d_ptr); break;
        case DT_STRTAB: strtab = (const char *) dyn_ptr(base, d->d_un.d_ptr); break;
        case DT_STRSZ: strsz = d->d_un.d_val; break;
        case DT_RELA: rela = (const ElfW(Rela) *) dyn_ptr(base, d->d_un.d_ptr); break;
        case DT_RELASZ: relasz = d->d_un.d_val; break;
        case DT_JMPREL: jmprel = (const ElfW(Rela) *) dyn_ptr(base, d->d_un.d_ptr); break;
        case DT_PLTRELSZ: pltrelsz = d->d_un.d_val; break;
        case DT_PLTREL: pltrel = (long) d->d_un.d_val; break;
        default: break;
        }
    }
    if (!symtab || !strtab) return 0;
    if (rela && relasz) walk_relocs(base, rela, relasz, symtab, strtab, strsz, obj, w->visit, w->ctx);
    if (jmprel && pltrelsz && pltrel == DT_RELA) walk_relocs(base, jmprel, pltrelsz, symtab, strtab, strsz, obj, w->visit, w->ctx);
    return 0;
}

static void patch_visit(void **slot, uint32_t fn, int obj, void *ctx)
{
    (void) ctx;
    void *cur = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (cur == hook_fn[fn]) return;                 /* already ours (GLOB_DAT and JUMP_SLOT may share) */
    if (!real_fn[fn] || cur != real_fn[fn]) {
        slots_foreign++;
        return;
    }
    if (nslots >= MS_MAX_SLOTS) {
        slots_unwritable++;
        return;
    }
    if (write_slot(slot, hook_fn[fn]) != 0) {
        slots_unwritable++;
        return;
    }
    slots[nslots].slot = slot;
    slots[nslots].orig = cur;
    slots[nslots].fn = fn;
    slots[nslots].obj = obj;
    nslots++;
    if (objects[obj].patched++ == 0) objects_patched++;
}

static int restore_all(void)
{
    int restored = 0;
    read_maps();
    for (int i = nslots - 1; i >= 0; i--) {
        void *cur = __atomic_load_n(slots[i].slot, __ATOMIC_ACQUIRE);
        if (cur != hook_fn[slots[i].fn]) {
            restore_mismatch++;
            continue;
        }
        if (write_slot(slots[i].slot, slots[i].orig) == 0) restored++;
        else restore_mismatch++;
    }
    return restored;
}

/* ---- API ---- */

MS_API int memdiag_sampler_version(void)
{
    return MS_VERSION;
}

/* Returns the number of slots rewritten (> 0), or a negative error:
 * -1 already armed, -2 cannot resolve, -3 no memory for tables, -4 /proc/self/maps, -5 nothing to patch */
MS_API int memdiag_sampler_arm(const memdiag_sampler_opts_t *opts)
{
    int rc;
    pthread_mutex_lock(&arm_lock);
    if (armed) { rc = -1; goto out; }
    if (resolve() != 0) { rc = -2; goto out; }
    if (tables_map() != 0) { rc = -3; goto out; }
    if (read_maps() != 0) { rc = -4; goto out; }
    text_refresh();

    mean_bytes = (opts && opts->mean_bytes) ? opts->mean_bytes : MS_DEFAULT_MEAN;
    if (mean_bytes < 1) mean_bytes = 1;
    depth_max = (opts && opts->depth > 0 && opts->depth <= MS_MAX_DEPTH) ? opts->depth : MS_MAX_DEPTH;
    record_aligned = opts ? (opts->record_aligned != 0) : 1;

    pthread_mutex_lock(&table_lock);
    tables_reset();
    pthread_mutex_unlock(&table_lock);
    if (on_main()) nur_sync();          /* the nursery's records belonged to the old tables */
    /* every thread draws a fresh countdown with the new mean */
    tls_init = 0;

    nslots = 0;
    nobjects = 0;
    objects_patched = 0;
    slots_foreign = 0;
    slots_unwritable = 0;
    restore_mismatch = 0;
    arm_ns = now_ns();
    arm_ms = coarse_ms();
    disarm_ns = 0;
    disarm_ms = 0;
    /* hooks see armed=1 before their first call through a rewritten slot */
    __atomic_store_n(&armed, 1, __ATOMIC_SEQ_CST);
    walk_ctx_t w = { patch_visit, NULL, 0, objects, &nobjects };
    dl_iterate_phdr(walk_cb, &w);
    if (nslots == 0) {
        __atomic_store_n(&armed, 0, __ATOMIC_SEQ_CST);
        rc = -5;
        goto out;
    }
    n_arms++;
    rc = nslots;
out:
    pthread_mutex_unlock(&arm_lock);
    return rc;
}

/* Restores every slot; returns how many were restored, -1 when not armed. Records stay readable (frozen). */
MS_API int memdiag_sampler_disarm(void)
{
    int rc;
    pthread_mutex_lock(&arm_lock);
    if (!armed) { rc = -1; goto out; }
    rc = restore_all();
    __atomic_store_n(&armed, 0, __ATOMIC_SEQ_CST);
    nur_flush_if_main();                /* records stay readable: all of them in the global table */
    disarm_ns = now_ns();
    disarm_ms = coarse_ms();
    n_disarms++;
out:
    pthread_mutex_unlock(&arm_lock);
    return rc;
}

/* Drops every record and gives the table pages back. Only when disarmed. */
MS_API int memdiag_sampler_clear(void)
{
    int rc = 0;
    pthread_mutex_lock(&arm_lock);
    if (armed) rc = -1;
    else {
        pthread_mutex_lock(&table_lock);
        tables_reset();
        pthread_mutex_unlock(&table_lock);
        if (on_main()) nur_sync();
    }
    pthread_mutex_unlock(&arm_lock);
    return rc;
}

MS_API int memdiag_sampler_armed(void)
{
    return armed;
}

MS_API void memdiag_sampler_stats(memdiag_sampler_stats_t *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_lock(&arm_lock);
    s->version = MS_VERSION;
    s->armed = armed;
    s->objects = nobjects;
    s->objects_patched = objects_patched;
    s->slots_patched = armed ? nslots : 0;
    s->slots_foreign = slots_foreign;
    s->slots_unwritable = slots_unwritable;
    s->depth = depth_max;
    s->record_aligned = record_aligned;
    s->mean_bytes = mean_bytes;
    s->arms = n_arms;
    s->disarms = n_disarms;
    s->self_bytes = table_size;
    s->restore_mismatch = restore_mismatch;
    if (arm_ns) s->armed_ms = ((armed ? now_ns() : disarm_ns) - arm_ns) / 1000000ull;
    pthread_mutex_unlock(&arm_lock);
    nur_flush_if_main();
    pthread_mutex_lock(&table_lock);
    s->sampled = st_sampled;
    s->recorded_aligned = st_aligned;
    s->frees_matched = st_frees;
    s->live_entries = live_entries;
    s->live_stacks = nstacks;
    s->drops_entries = st_drop_entries;
    s->drops_stacks = st_drop_stacks;
    s->reentrant = st_reentrant;
    s->backtrace_ns = st_bt_ns;
    s->unwinds = st_unwinds;
    s->cache_hits = st_cache_hits;
    if (__atomic_load_n(&nur.gen, __ATOMIC_RELAXED) == nur.table_gen) {
        /* the nursery's counters (exact on the main thread; a recent snapshot elsewhere) */
        s->sampled += __atomic_load_n(&nur.sampled, __ATOMIC_RELAXED);
        s->recorded_aligned += __atomic_load_n(&nur.aligned, __ATOMIC_RELAXED);
        s->cache_hits += __atomic_load_n(&nur.cache_hits, __ATOMIC_RELAXED);
        s->frees_matched += __atomic_load_n(&nur.frees, __ATOMIC_RELAXED);
        s->live_entries += __atomic_load_n(&nur.live, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&table_lock);
}

/*
 * Live records grouped by call path, written to out[0..max). window_ms > 0:
 * only records made in the last window_ms; min_age_ms > 0: only records at
 * least that old (so in-flight requests drop out). Returns the number written;
 * paths without matching live records are left out.
 */
MS_API int memdiag_sampler_paths(memdiag_sampler_path_t *out, int max, uint32_t window_ms, uint32_t min_age_ms)
{
    int n = 0;
    if (!table_mem || max <= 0) return 0;
    nur_flush_if_main();
    pthread_mutex_lock(&table_lock);
    int filtered = window_ms > 0 || min_age_ms > 0;
    int nur_current = __atomic_load_n(&nur.gen, __ATOMIC_RELAXED) == nur.table_gen;
    if (filtered) {
        uint64_t ref = armed ? coarse_ms() : disarm_ms;
        uint64_t now_rel = ref > arm_ms ? ref - arm_ms : 0;
        for (uint32_t i = 0; i < nstacks; i++) {
            stacks[i].w_count = stacks[i].w_bytes = stacks[i].w_est_bytes = stacks[i].w_est_count_milli = 0;
        }
        for (uint32_t i = 0; i < entries_used; i++) {
            ms_entry_t *e = &entries[i];
            if (!e->ptr || !e->stack) continue;
            uint64_t age = now_rel > e->t_ms ? now_rel - e->t_ms : 0;
            if (window_ms > 0 && age > window_ms) continue;
            if (age < min_age_ms) continue;
            ms_stack_t *st = &stacks[e->stack - 1];
            st->w_count++;
            st->w_bytes += e->size;
            st->w_est_bytes += e->w_bytes;
            st->w_est_count_milli += e->w_count_milli;
        }
    }
    for (uint32_t i = 0; i < nstacks && n < max; i++) {
        ms_stack_t *st = &stacks[i];
        uint64_t cnt = filtered ? st->w_count : st->live_count;
        if (cnt == 0) continue;
        memdiag_sampler_path_t *o = &out[n++];
        o->id = i + 1;
        o->depth = st->depth;
        o->fn = st->fn;
        o->pad = 0;
        o->live_count = cnt;
        o->live_bytes = filtered ? st->w_bytes : st->live_bytes;
        o->est_bytes = filtered ? st->w_est_bytes : st->est_bytes;
        o->est_count_milli = filtered ? st->w_est_count_milli : st->est_count_milli;
        o->total_count = st->total_count;
        o->total_bytes = st->total_bytes;
        if (nur_current) {
            o->total_count += __atomic_load_n(&nur_total[i][0], __ATOMIC_RELAXED);
            o->total_bytes += __atomic_load_n(&nur_total[i][1], __ATOMIC_RELAXED);
        }
    }
    pthread_mutex_unlock(&table_lock);
    return n;
}

/* Frames (return addresses, innermost first) of path id; returns the count. */
MS_API int memdiag_sampler_frames(uint32_t id, void **out, int max)
{
    int n = 0;
    if (!table_mem) return 0;
    nur_flush_if_main();
    pthread_mutex_lock(&table_lock);
    if (id >= 1 && id <= nstacks) {
        ms_stack_t *st = &stacks[id - 1];
        n = (int) st->depth < max ? (int) st->depth : max;
        memcpy(out, st->frames, (size_t) n * sizeof(void *));
    }
    pthread_mutex_unlock(&table_lock);
    return n;
}

/* Path id of the live record at exactly ptr (e.g. a pool's first block), 0 if none; size via *size. */
MS_API uint32_t memdiag_sampler_lookup(const void *ptr, uint64_t *size, uint32_t *age_ms)
{
    uint32_t id = 0;
    uint64_t p = (uint64_t) (uintptr_t) ptr;
    if (!table_mem) return 0;
    nur_flush_if_main();
    pthread_mutex_lock(&table_lock);
    uint32_t cur = buckets[ptr_bucket(p)], guard = 0;
    while (cur && guard++ < MS_MAX_ENTRIES) {
        ms_entry_t *e = &entries[cur - 1];
        if (e->ptr == p) {
            id = e->stack;
            if (size) *size = e->size;
            if (age_ms) {
                uint64_t ref = armed ? coarse_ms() : disarm_ms;
                uint64_t now_rel = ref > arm_ms ? ref - arm_ms : 0;
                *age_ms = now_rel > e->t_ms ? (uint32_t) (now_rel - e->t_ms) : 0;
            }
            break;
        }
        cur = e->next;
    }
    pthread_mutex_unlock(&table_lock);
    return id;
}

/* Slots rewritten by the current/last arm: address, current value, original. */
MS_API int memdiag_sampler_slots(memdiag_sampler_slot_t *out, int max)
{
    int n = 0;
    pthread_mutex_lock(&arm_lock);
    for (int i = 0; i < nslots && n < max; i++, n++) {
        out[n].slot = (uint64_t) (uintptr_t) slots[i].slot;
        out[n].value = (uint64_t) (uintptr_t) __atomic_load_n(slots[i].slot, __ATOMIC_ACQUIRE);
        out[n].orig = (uint64_t) (uintptr_t) slots[i].orig;
        out[n].fn = slots[i].fn;
        out[n].obj = slots[i].obj;
    }
    pthread_mutex_unlock(&arm_lock);
    return n;
}

typedef struct { memdiag_sampler_slot_t *out; int max; int n; } scan_ctx_t;

static void scan_visit(void **slot, uint32_t fn, int obj, void *ctx)
{
    scan_ctx_t *c = ctx;
    if (c->n >= c->max) return;
    memdiag_sampler_slot_t *o = &c->out[c->n++];
    o->slot = (uint64_t) (uintptr_t) slot;
    o->value = (uint64_t) (uintptr_t) __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    o->orig = (uint64_t) (uintptr_t) real_fn[fn];
    o->fn = fn;
    o->obj = obj;
}

/*
 * Fresh walk of every loaded object (skipped ones included), independent of
 * the saved originals: every JUMP_SLOT/GLOB_DAT slot of the hooked functions
 * with its current value and the global definition. Rebuilds the object list.
 */
MS_API int memdiag_sampler_scan(memdiag_sampler_slot_t *out, int max)
{
    scan_ctx_t c = { out, max, 0 };
    pthread_mutex_lock(&arm_lock);
    if (resolve() == 0) {
        nscan_objects = 0;
        walk_ctx_t w = { scan_visit, &c, 1, scan_objects, &nscan_objects };
        dl_iterate_phdr(walk_cb, &w);
    }
    pthread_mutex_unlock(&arm_lock);
    return c.n;
}

/* Object obj of the last arm (scan = 0) or of the last scan (scan = 1): path, base, skipped, patched slots. */
MS_API const char *memdiag_sampler_object(int scan, int obj, uint64_t *base, int *skipped, int *patched)
{
    ms_object_t *list = scan ? scan_objects : objects;
    int n = scan ? nscan_objects : nobjects;
    if (obj < 0 || obj >= n) return NULL;
    if (base) *base = list[obj].base;
    if (skipped) *skipped = list[obj].skipped;
    if (patched) *patched = list[obj].patched;
    return list[obj].name;
}

MS_API uint64_t memdiag_sampler_hook(int fn)
{
    return (fn >= 0 && fn < MS_NFUNCS) ? (uint64_t) (uintptr_t) hook_fn[fn] : 0;
}

MS_API uint64_t memdiag_sampler_real(int fn)
{
    if (resolve() != 0) return 0;
    return (fn >= 0 && fn < MS_NFUNCS) ? (uint64_t) (uintptr_t) real_fn[fn] : 0;
}

typedef struct { uintptr_t addr; char *out; int len; int found; } bid_ctx_t;

static int bid_cb(struct dl_phdr_info *info, size_t sz, void *data)
{
    (void) sz;
    bid_ctx_t *c = data;
    int inside = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (c->addr >= lo && c->addr < lo + ph->p_memsz) inside = 1;
    }
    if (!inside) return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE) continue;
        const unsigned char *p = (const unsigned char *) (info->dlpi_addr + ph->p_vaddr);
        const unsigned char *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *) p;
            const unsigned char *name = p + sizeof(ElfW(Nhdr));
            const unsigned char *desc = name + ((nh->n_namesz + 3) & ~3u);
            const unsigned char *next = desc + ((nh->n_descsz + 3) & ~3u);
            if (next > end) break;
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && memcmp(name, "GNU", 4) == 0) {
                static const char hx[] = "0123456789abcdef";
                int k = 0;
                for (uint32_t j = 0; j < nh->n_descsz && k + 2 < c->len; j++) {
                    c->out[k++] = hx[desc[j] >> 4];
                    c->out[k++] = hx[desc[j] & 15];
                }
                c->out[k] = 0;
                c->found = 1;
                return 1;
            }
            p = next;
        }
    }
    return 1;
}

/* GNU build-id (hex) of the object containing addr; returns 1 if found. */
MS_API int memdiag_sampler_build_id(const void *addr, char *out, int len)
{
    bid_ctx_t c = { (uintptr_t) addr, out, len, 0 };
    if (len > 0) out[0] = 0;
    dl_iterate_phdr(bid_cb, &c);
    return c.found;
}

typedef struct { uintptr_t addr; char *out; int len; uintptr_t base; int found; int first; } obj_ctx_t;

static int obj_cb(struct dl_phdr_info *info, size_t sz, void *data)
{
    (void) sz;
    obj_ctx_t *c = data;
    int first = c->first;
    c->first = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (c->addr < lo || c->addr >= lo + ph->p_memsz) continue;
        c->base = info->dlpi_addr;
        c->found = 1;
        const char *name = info->dlpi_name ? info->dlpi_name : "";
        if (name[0] == 0 && first) {
            /* the executable: dladdr would give argv[0], which nginx overwrites with its process title */
            ssize_t r = readlink("/proc/self/exe", c->out, (size_t) c->len - 1);
            c->out[r > 0 ? r : 0] = 0;
        } else {
            strncpy(c->out, name, (size_t) c->len - 1);
            c->out[c->len - 1] = 0;
        }
        return 1;
    }
    return 0;
}

/* Path and load base of the object containing addr (the executable's real path, not argv[0]); 1 if found. */
MS_API int memdiag_sampler_object_at(const void *addr, char *out, int len, uint64_t *base)
{
    obj_ctx_t c = { (uintptr_t) addr, out, len, 0, 0, 1 };
    if (len <= 1) return 0;
    out[0] = 0;
    dl_iterate_phdr(obj_cb, &c);
    if (base) *base = c.base;
    return c.found;
}

/* Allocation function index of path id (0xffffffff if unknown). */
MS_API uint32_t memdiag_sampler_path_fn(uint32_t id)
{
    uint32_t fn = 0xffffffffu;
    if (!table_mem) return fn;
    pthread_mutex_lock(&table_lock);
    if (id >= 1 && id <= nstacks) fn = stacks[id - 1].fn;
    pthread_mutex_unlock(&table_lock);
    return fn;
}
