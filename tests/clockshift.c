/* A wall-clock step for one process, as an LD_PRELOAD library: CLOCK_REALTIME (and
 * gettimeofday, time) read the real clock plus an offset in seconds taken from the file
 * named by CLOCKSHIFT_FILE (re-read at most every 50 ms of monotonic time; a missing or
 * unreadable file means no shift). The monotonic clocks and every sleep and timed wait
 * are left alone, exactly as when an administrator or NTP steps the system clock.
 *
 * (libfaketime's FAKETIME_DONT_FAKE_MONOTONIC does not do this in Debian 12's 0.9.10: it
 * still shifts absolute CLOCK_MONOTONIC sleeps, so Python 3.11's time.sleep fails with
 * EINVAL or sleeps for the offset.)
 *
 * Build: gcc -shared -fPIC -O2 -o clockshift.so clockshift.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static clock_gettime_fn real_clock_gettime;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long long offset_ns;
static long long next_read_ns;

static void init(void) {
    if (!real_clock_gettime)
        real_clock_gettime = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
}

static long long current_offset(void) {
    struct timespec mono;
    long long now, result;
    real_clock_gettime(CLOCK_MONOTONIC, &mono);
    now = (long long)mono.tv_sec * 1000000000LL + mono.tv_nsec;
    pthread_mutex_lock(&lock);
    if (now >= next_read_ns) {
        const char *path = getenv("CLOCKSHIFT_FILE");
        double seconds = 0.0;
        FILE *f = path ? fopen(path, "r") : NULL;
        if (f) {
            if (fscanf(f, "%lf", &seconds) != 1)
                seconds = offset_ns / 1e9; /* a file being rewritten: keep the last */
            fclose(f);
        }
        offset_ns = (long long)(seconds * 1e9);
        next_read_ns = now + 50000000LL;
    }
    result = offset_ns;
    pthread_mutex_unlock(&lock);
    return result;
}

static void shift(struct timespec *ts) {
    long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + current_offset();
    ts->tv_sec = (time_t)(ns / 1000000000LL);
    ts->tv_nsec = (long)(ns % 1000000000LL);
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    int rc;
    init();
    rc = real_clock_gettime(clock, ts);
    if (rc == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE))
        shift(ts);
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    struct timeval *volatile out = tv; /* declared nonnull, yet NULL is passed in practice */
    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return -1;
    if (out) {
        out->tv_sec = ts.tv_sec;
        out->tv_usec = ts.tv_nsec / 1000;
    }
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out)
        *out = ts.tv_sec;
    return ts.tv_sec;
}
