/* util.c — checked allocation, timing, /proc memory figures, FNV-1a, file helpers and
 * half-precision conversions. */
#include "cfsp/util/util.h"
#include "cfsp/util/err.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) DIE("out of memory allocating %zu bytes", n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) DIE("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) DIE("out of memory reallocating %zu bytes", n);
    return q;
}

char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

int mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a != 0 && b > UINT64_MAX / a) return -1;
    *out = a * b;
    return 0;
}

double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int64_t proc_status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    int64_t v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0) { v = strtoll(line + kl, NULL, 10); break; }
    fclose(f);
    return v;
}

int64_t vm_hwm_bytes(void) { int64_t k = proc_status_kb("VmHWM:"); return k < 0 ? -1 : k * 1024; }

uint64_t fnv1a64(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ULL; }
    return h;
}

const char *file_kind(unsigned mode)
{
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a file";
}

/* stat (following symlinks), never open: opening a FIFO for reading blocks until a writer comes */
int input_check(const char *path, const char *what)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return FAIL("%s: cannot open%s%s: %s", path, what ? " " : "", what ? what : "", strerror(errno));
    if (!S_ISREG(st.st_mode)) return FAIL("%s: not a regular file (%s)", path, file_kind(st.st_mode));
    return 0;
}

int input_open(const char *path, const char *what)
{
    if (input_check(path, what)) return -1;
    /* O_NONBLOCK: should the path become a FIFO between the stat and the open, the open still
     * returns at once (and the fstat below refuses it); on a regular file it changes nothing */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return FAIL("%s: cannot open%s%s: %s", path, what ? " " : "", what ? what : "", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) { int e = errno; close(fd); return FAIL("%s: cannot stat: %s", path, strerror(e)); }
    if (!S_ISREG(st.st_mode)) { close(fd); return FAIL("%s: not a regular file (%s)", path, file_kind(st.st_mode)); }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

int read_whole_file(const char *path, size_t max_bytes, char **out, size_t *len)
{
    int fd = input_open(path, NULL);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return FAIL("%s: cannot stat: %s", path, strerror(errno)); }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        return FAIL("%s: file is %lld bytes, more than the %zu allowed", path, (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = xmalloc(n + 1);
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { free(buf); close(fd); return FAIL("%s: read failed after %zu of %zu bytes", path, got, n); }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

int path_exists(const char *path) { struct stat st; return stat(path, &st) == 0; }

static int dir_is_writable(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) && access(path, W_OK | X_OK) == 0;
}

int64_t free_disk_bytes(const char *dir)
{
    struct statvfs s;
    if (statvfs(dir, &s) != 0) return -1;
    return (int64_t)s.f_bavail * (int64_t)s.f_frsize;
}

int mkdir_p(const char *path)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return FAIL("%s: path too long", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0777) != 0 && errno != EEXIST) return FAIL("%s: cannot create directory: %s", tmp, strerror(errno));
            *p = '/';
        }
    if (mkdir(tmp, 0777) != 0 && errno != EEXIST) return FAIL("%s: cannot create directory: %s", tmp, strerror(errno));
    if (!dir_is_writable(tmp)) return FAIL("%s: output directory is not writable", tmp);
    return 0;
}

float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        float f = ldexpf((float)man, -24);
        return sign ? -f : f;
    }
    if (exp == 31) u = sign | 0x7f800000u | (man << 13);
    else u = sign | ((exp + 112u) << 23) | (man << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (absu >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* overflow -> inf */
    if (absu < 0x38800000u) {                                    /* subnormal or zero */
        float a;
        memcpy(&a, &absu, 4);
        float scaled = a * 16777216.0f;                          /* 2^24: units of the smallest subnormal */
        uint32_t m = (uint32_t)lrintf(scaled);                   /* RNE under the default rounding mode */
        return (uint16_t)(sign | m);
    }
    uint32_t e = ((absu >> 23) - 112u) << 10, man = absu & 0x7fffffu;
    uint32_t h = e | (man >> 13);
    uint32_t rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

int write_text_atomic(const char *path, const char *text)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return FAIL("%s: cannot create", tmp);
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n;
    ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;   /* on the device before the rename publishes it */
    ok &= fclose(f) == 0;
    if (!ok) { unlink(tmp); return FAIL("%s: write failed (disk full?)", tmp); }
    if (rename(tmp, path) != 0) { unlink(tmp); return FAIL("cannot rename %s to %s", tmp, path); }
    return 0;
}
