/* A scripted stand-in for libnvidia-ml.so.1, loaded by the real pynvml in tests.
 *
 * Build: gcc -shared -fPIC -o libnvidia-ml.so.1 nvml_shim.c
 *
 * The script is a text file named by NVML_SHIM_SCRIPT, one directive a line
 * ('#' starts a comment):
 *   count N                      number of GPUs (default 2)
 *   init_error CODE              nvmlInitWithFlags returns CODE
 *   util DEV BASE STEP           gpu util = BASE + STEP * (calls so far), capped at 100
 *   memutil DEV VALUE            memory util percent
 *   mem DEV TOTAL USED           bytes
 *   power DEV MILLIWATTS
 *   temp DEV CELSIUS
 *   clocks DEV SM_MHZ MEM_MHZ
 *   throttle DEV MASK
 *   pcie DEV RX_KBPS TX_KBPS
 *   procmem DEV BYTES            memory of the calling process (another pid 1 uses 12345)
 *   hires DEV VALUE              nvmlDeviceGetSamples yields 2 new samples of VALUE a call
 *   err FUNCTION DEV CODE        FUNCTION always returns CODE for DEV
 *   lost DEV K                   after K utilisation reads, every call on DEV returns 15
 *   hang DEV K                   after K utilisation reads, every call on DEV blocks (a wedged driver)
 * If NVML_SHIM_LOG names a file, nvmlShutdown writes "FUNCTION DEV CALLS" lines to it.
 * Only the functions below exist: others are "Function Not Found" in pynvml.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define MAXDEV 8
#define MAXERR 32
#define MAXFN 32

typedef struct {
    int index;
    unsigned util_base, util_step, memutil, power_mw, temp, sm_clock, mem_clock, pcie_rx, pcie_tx, hires, util_calls;
    unsigned long long mem_total, mem_used, throttle, procmem, last_hires_us;
    int lost_after; /* -1: never */
    int hang_after; /* -1: never */
} dev_t_;

typedef struct { char fn[64]; int dev; int code; } err_t_;

static dev_t_ devs[MAXDEV];
static int ndev = 2, init_error = 0, nerr = 0, loaded = 0;
static err_t_ errs[MAXERR];
static char fn_names[MAXFN][64];
static long calls[MAXFN][MAXDEV];
static int nfn = 0;

static void load(void) {
    if (loaded) return;
    loaded = 1;
    for (int i = 0; i < MAXDEV; i++) {
        dev_t_ *d = &devs[i];
        memset(d, 0, sizeof *d);
        d->index = i; d->util_base = 10 * i; d->util_step = 1; d->memutil = 5; d->mem_total = 16ULL << 30;
        d->mem_used = 1ULL << 30; d->power_mw = 100000; d->temp = 40; d->sm_clock = 1400; d->mem_clock = 5000;
        d->lost_after = -1;
        d->hang_after = -1;
    }
    const char *path = getenv("NVML_SHIM_SCRIPT");
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) return;
    char line[256], key[64], fn[64];
    while (fgets(line, sizeof line, f)) {
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        int dev = 0; unsigned long long a = 0, b = 0;
        if (sscanf(line, "%63s", key) != 1) continue;
        if (!strcmp(key, "count")) sscanf(line, "%*s %d", &ndev);
        else if (!strcmp(key, "init_error")) sscanf(line, "%*s %d", &init_error);
        else if (!strcmp(key, "err") && nerr < MAXERR) {
            if (sscanf(line, "%*s %63s %d %d", fn, &errs[nerr].dev, &errs[nerr].code) == 3) {
                strcpy(errs[nerr].fn, fn); nerr++;
            }
        } else {
            int n = sscanf(line, "%*s %d %llu %llu", &dev, &a, &b);
            if (n < 2 || dev < 0 || dev >= MAXDEV) continue;
            dev_t_ *d = &devs[dev];
            if (!strcmp(key, "util")) { d->util_base = a; if (n > 2) d->util_step = b; }
            else if (!strcmp(key, "memutil")) d->memutil = a;
            else if (!strcmp(key, "mem")) { d->mem_total = a; d->mem_used = b; }
            else if (!strcmp(key, "power")) d->power_mw = a;
            else if (!strcmp(key, "temp")) d->temp = a;
            else if (!strcmp(key, "clocks")) { d->sm_clock = a; d->mem_clock = b; }
            else if (!strcmp(key, "throttle")) d->throttle = a;
            else if (!strcmp(key, "pcie")) { d->pcie_rx = a; d->pcie_tx = b; }
            else if (!strcmp(key, "procmem")) d->procmem = a;
            else if (!strcmp(key, "hires")) d->hires = a;
            else if (!strcmp(key, "lost")) d->lost_after = (int)a;
            else if (!strcmp(key, "hang")) d->hang_after = (int)a;
        }
    }
    fclose(f);
}

/* Count the call; return the scripted error for (fn, device), 15 when lost, else 0. */
static int enter(const char *fn, const dev_t_ *d) {
    int dev = d ? d->index : 0, i;
    for (i = 0; i < nfn; i++) if (!strcmp(fn_names[i], fn)) break;
    if (i == nfn && nfn < MAXFN) strcpy(fn_names[nfn++], fn);
    if (i < MAXFN) calls[i][dev]++;
    if (d && d->lost_after >= 0 && (int)d->util_calls >= d->lost_after) return 15;
    if (d && d->hang_after >= 0 && (int)d->util_calls >= d->hang_after) for (;;) sleep(3600);
    for (int e = 0; e < nerr; e++) if (errs[e].dev == dev && !strcmp(errs[e].fn, fn)) return errs[e].code;
    return 0;
}

#define ENTER(dev) do { int rc_ = enter(__func__, (dev)); if (rc_) return rc_; } while (0)

typedef struct { unsigned gpu, memory; } util_t;
typedef struct { unsigned long long total, free, used; } mem_t;
typedef union { double d; unsigned ui; unsigned long ul; unsigned long long ull; long long sll; int si; unsigned short us; } value_t;
typedef struct { unsigned long long ts; value_t v; } sample_t;
typedef struct { unsigned pid; unsigned long long used; unsigned gi, ci; } proc_t;

static unsigned long long now_us(void) {
    struct timeval tv; gettimeofday(&tv, NULL);
    return (unsigned long long)tv.tv_sec * 1000000ULL + tv.tv_usec;
}

int nvmlInitWithFlags(unsigned flags) { (void)flags; load(); ENTER(NULL); return init_error; }
int nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
int nvmlShutdown(void) {
    ENTER(NULL);
    const char *path = getenv("NVML_SHIM_LOG");
    FILE *f = path ? fopen(path, "w") : NULL;
    if (f) {
        for (int i = 0; i < nfn; i++)
            for (int d = 0; d < MAXDEV; d++)
                if (calls[i][d]) fprintf(f, "%s %d %ld\n", fn_names[i], d, calls[i][d]);
        fclose(f);
    }
    return 0;
}
const char *nvmlErrorString(int code) {
    switch (code) {
    case 3: return "Not Supported";
    case 15: return "GPU is lost";
    default: return "Shim Error";
    }
}
int nvmlDeviceGetCount_v2(unsigned *count) { ENTER(NULL); *count = ndev; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned i, dev_t_ **h) {
    if (i >= (unsigned)ndev || i >= MAXDEV) return 2;
    ENTER(&devs[i]); *h = &devs[i]; return 0;
}
int nvmlDeviceGetUUID(dev_t_ *d, char *buf, unsigned len) {
    ENTER(d); snprintf(buf, len, "GPU-%08d-shim-0000-0000-00000000000%d", d->index, d->index); return 0;
}
int nvmlDeviceGetName(dev_t_ *d, char *buf, unsigned len) { ENTER(d); snprintf(buf, len, "Shim GPU %d", d->index); return 0; }
int nvmlDeviceGetUtilizationRates(dev_t_ *d, util_t *u) {
    ENTER(d);
    unsigned v = d->util_base + d->util_step * d->util_calls++;
    u->gpu = v > 100 ? 100 : v; u->memory = d->memutil; return 0;
}
int nvmlDeviceGetMemoryInfo(dev_t_ *d, mem_t *m) {
    ENTER(d); m->total = d->mem_total; m->used = d->mem_used; m->free = d->mem_total - d->mem_used; return 0;
}
int nvmlDeviceGetPowerUsage(dev_t_ *d, unsigned *mw) { ENTER(d); *mw = d->power_mw; return 0; }
int nvmlDeviceGetTemperature(dev_t_ *d, int sensor, unsigned *t) { ENTER(d); (void)sensor; *t = d->temp; return 0; }
int nvmlDeviceGetClockInfo(dev_t_ *d, int type, unsigned *mhz) {
    ENTER(d); if (type == 1) *mhz = d->sm_clock; else if (type == 2) *mhz = d->mem_clock; else return 2; return 0;
}
int nvmlDeviceGetCurrentClocksThrottleReasons(dev_t_ *d, unsigned long long *mask) { ENTER(d); *mask = d->throttle; return 0; }
int nvmlDeviceGetPcieThroughput(dev_t_ *d, int counter, unsigned *kbps) {
    ENTER(d); *kbps = counter == 1 ? d->pcie_rx : d->pcie_tx; return 0;
}
int nvmlDeviceGetComputeRunningProcesses_v3(dev_t_ *d, unsigned *count, proc_t *procs) {
    ENTER(d);
    if (!procs || *count < 2) { *count = 2; return 7; /* INSUFFICIENT_SIZE */ }
    procs[0].pid = (unsigned)getpid(); procs[0].used = d->procmem; procs[0].gi = procs[0].ci = 0;
    procs[1].pid = 1; procs[1].used = 12345; procs[1].gi = procs[1].ci = 0;
    *count = 2; return 0;
}
int nvmlDeviceGetSamples(dev_t_ *d, int type, unsigned long long last_seen, int *value_type, unsigned *count, sample_t *out) {
    ENTER(d);
    if (type != 1 || !d->hires) return 3;
    *value_type = 1; /* NVML_VALUE_TYPE_UNSIGNED_INT */
    unsigned long long now = now_us();
    if (!out) { *count = 3; return 0; }
    /* Two samples in the last millisecond, plus a repeat of the previous one (NVML may
       hand back samples at the boundary; the collector must not record them twice). */
    unsigned n = 0;
    unsigned long long ts[3] = {d->last_hires_us, now - 1000, now - 500};
    for (int i = 0; i < 3 && n < *count; i++) {
        if (ts[i] == 0 || ts[i] < last_seen) continue;
        out[n].ts = ts[i]; out[n].v.ui = d->hires; n++;
    }
    d->last_hires_us = now - 500;
    *count = n;
    return n ? 0 : 6; /* NOT_FOUND when nothing new */
}
