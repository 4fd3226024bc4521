/* util.h — small helpers shared by every module: checked allocation, timing, memory figures,
 * checksums, whole-file reads and numeric parsing. */
#ifndef CFSP_UTIL_H
#define CFSP_UTIL_H
#include <stddef.h>
#include <stdint.h>

void *xmalloc(size_t n);                 /* DIE on failure; n == 0 allowed */
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* a*b with overflow check: returns 0 and sets *out, or -1 */
int mul_u64(uint64_t a, uint64_t b, uint64_t *out);

double now_seconds(void);
int64_t vm_hwm_bytes(void);              /* peak resident set of this process (/proc/self/status) */

uint64_t fnv1a64(uint64_t h, const void *data, size_t n);
#define FNV1A64_INIT 0xcbf29ce484222325ULL

/* Every input file goes through these (untrusted paths): stat() -- symlinks followed, the path
 * never opened -- must show a regular file, else FAIL("PATH: not a regular file (a FIFO)"; a
 * directory, a character/block device, a socket). A missing file: "PATH: cannot open[ WHAT]: ...".
 * input_open then opens it read-only (O_NONBLOCK, re-checked with fstat): the fd, or -1. */
int input_check(const char *path, const char *what);
int input_open(const char *path, const char *what);
const char *file_kind(unsigned mode);    /* "a FIFO", "a directory", ... of a stat st_mode */
/* read a whole file (at most max_bytes) into a NUL-terminated buffer; FAIL on error */
int read_whole_file(const char *path, size_t max_bytes, char **out, size_t *len);
int path_exists(const char *path);
int64_t free_disk_bytes(const char *dir);
int mkdir_p(const char *path);
/* text to path through path.tmp and a rename; FAIL on any write, close or rename error */
int write_text_atomic(const char *path, const char *text);
/* text to path itself (a caller's temporary name): every write checked, fsync, close; FAIL (and
 * the file removed) on any error */
int write_text_file(const char *path, const char *text);
/* fsync a directory (renames in it durable); FAIL on error */
int fsync_dir(const char *dir);
/* The job lock of an output directory: an advisory fcntl write lock on DIR/.cfsp-mpi.lock, which
 * holds "host H pid P" of the job. FAIL naming the other job's host and pid if a live job holds it;
 * a lock file left by a job that no longer runs (lock not held) is taken over with a note naming
 * its host and pid. Held until output_dir_unlock or the process ends (the file is removed on every
 * failure path, as a temporary file is). One lock per process. */
#define CFSP_LOCK_NAME ".cfsp-mpi.lock"
int output_dir_lock(const char *dir);
void output_dir_unlock(void);

/* float conversions (round to nearest even) */
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
#endif
