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

int write_text_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return FAIL("%s: cannot create: %s", path, strerror(errno));
    size_t n = strlen(text);
    errno = 0;
    int ok = fwrite(text, 1, n, f) == n;
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;   /* on the device before a rename publishes it */
    int e = errno;
    if (fclose(f) != 0 && ok) { ok = 0; e = errno; }
    if (!ok) { unlink(path); return FAIL("%s: write failed: %s", path, e ? strerror(e) : "short write"); }
    return 0;
}

int write_text_atomic(const char *path, const char *text)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (write_text_file(tmp, text)) return -1;
    if (rename(tmp, path) != 0) { int e = errno; unlink(tmp); return FAIL("cannot rename %s to %s: %s", tmp, path, strerror(e)); }
    return 0;
}

int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return FAIL("%s: cannot open the directory to sync it: %s", dir, strerror(errno));
    int rc = fsync(fd) != 0 ? FAIL("%s: cannot fsync the directory: %s", dir, strerror(errno)) : 0;
    if (close(fd) != 0 && !rc) rc = FAIL("%s: cannot close the directory: %s", dir, strerror(errno));
    return rc;
}

/* The job lock (see util.h). The descriptor stays open until the process ends: closing any
 * descriptor of the file would drop an fcntl lock, so the file is opened once only. */
static int g_lock_fd = -1;
static char g_lock_path[4200];

static void lock_holder(int fd, char *out, size_t n)
{
    char buf[512];
    ssize_t k = pread(fd, buf, sizeof buf - 1, 0);
    buf[k > 0 ? k : 0] = 0;
    buf[strcspn(buf, "\r\n")] = 0;
    snprintf(out, n, "%s", buf[0] ? buf : "host and pid not recorded");
}

int output_dir_lock(const char *dir)
{
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0]) snprintf(host, sizeof host, "unknown");
    snprintf(g_lock_path, sizeof g_lock_path, "%s/" CFSP_LOCK_NAME, dir);
    for (int attempt = 0; attempt < 20; attempt++) {
        int fd = open(g_lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) return FAIL("%s: cannot create the lock file: %s", g_lock_path, strerror(errno));
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
        char who[512];
        if (fcntl(fd, F_SETLK, &fl) != 0) {
            int e = errno;
            lock_holder(fd, who, sizeof who);
            close(fd);
            if (e == EAGAIN || e == EACCES)
                return FAIL("%s: another cfsp-mpi job is using this output directory (%s; it holds %s): wait for it to end or "
                            "use another --output-dir", dir, who, g_lock_path);
            return FAIL("%s: cannot lock: %s", g_lock_path, strerror(e));
        }
        /* the job that held it may have removed the file between our open and our lock: then the
         * lock is on a name no other job sees; open the new file */
        struct stat a, b;
        if (fstat(fd, &a) != 0 || stat(g_lock_path, &b) != 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
            close(fd);
            continue;
        }
        if (a.st_size > 0) {
            lock_holder(fd, who, sizeof who);
            fprintf(stderr, "cfsp-mpi: note: %s: taking over the stale lock of a job that is no longer running (%s)\n", g_lock_path, who);
        }
        char me[400];
        int n = snprintf(me, sizeof me, "host %s pid %ld\n", host, (long)getpid());
        if (ftruncate(fd, 0) != 0 || pwrite(fd, me, (size_t)n, 0) != n || fsync(fd) != 0) {
            int e = errno;
            close(fd);
            return FAIL("%s: cannot write the lock file: %s", g_lock_path, strerror(e));
        }
        g_lock_fd = fd;
        cfsp_tmp_register(g_lock_path);      /* removed on every failure path too */
        if (cfsp_fault("hold", "lock")) {    /* test hook (err.h): the job holds its lock until */
            const char *rel = getenv("CFSP_FAULT_RELEASE");   /* that file exists (at most 300 s) */
            struct timespec ts = { 0, 20000000 };
            for (int i = 0; rel && i < 15000 && access(rel, F_OK) != 0; i++) nanosleep(&ts, NULL);
        }
        return 0;
    }
    return FAIL("%s: cannot take the lock (the file keeps being replaced)", g_lock_path);
}

void output_dir_unlock(void)
{
    if (g_lock_fd < 0) return;
    cfsp_tmp_unregister(g_lock_path);
    unlink(g_lock_path);                     /* before the close: no other job can hold it yet */
    close(g_lock_fd);
    g_lock_fd = -1;
}
