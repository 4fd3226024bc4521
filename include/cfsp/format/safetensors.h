/* safetensors.h — read-only access to Hugging Face safetensors checkpoints (one file or shards
 * with model.safetensors.index.json). Headers are parsed and validated up front (every size and
 * offset checked); tensor data is memory-mapped lazily, tensor by tensor, so a rank maps and
 * touches only the tensors it asks for. */
#ifndef CFSP_SAFETENSORS_H
#define CFSP_SAFETENSORS_H
#include <stdint.h>
#include <stddef.h>

typedef enum { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2 } dtype_t;
size_t dtype_size(dtype_t t);
const char *dtype_name(dtype_t t);          /* "F32", "F16", "BF16" */
int dtype_from_name(const char *s, dtype_t *t);

#define ST_MAX_DIMS 4
#define ST_MAX_HEADER (100u << 20)

typedef struct {
    char *name;
    dtype_t dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end;       /* offsets within the file's data buffer */
    int file;                  /* index into st_model.files */
    void *map;                 /* mmap of the page range holding the data (lazy) */
    size_t map_len;
    const void *data;
} st_tensor;

typedef struct {
    char *path;
    int fd;
    uint64_t size;             /* file size */
    uint64_t data_start;       /* 8 + header length */
} st_file;

typedef struct {
    st_file *files;
    int nfiles;
    st_tensor *t;
    int nt;
    int *hash;                 /* open addressing over names, size hash_cap */
    int hash_cap;
    uint64_t bytes_mapped;     /* sum of the data sizes of tensors mapped so far */
    uint64_t header_hash;      /* FNV-1a over every header, for model fingerprints */
    char *holes;               /* the first file's bytes no tensor owns (the format allows none), as a
                                * message, or NULL: refused by weights_check_unused after the
                                * missing-tensor check (a tensor dropped from a header leaves a hole) */
} st_model;

/* Parse one header (the JSON after the 8-byte length) of a file whose data buffer holds
 * data_size bytes. Appends tensors to *m with file index file_idx. Checks names unique within the
 * header, dtypes known, shape products, size = product * dtype size, offsets in range, no overlap. */
int st_parse_header(const char *json, size_t len, uint64_t data_size, const char *fname, int file_idx, st_model *m);
/* Parse model.safetensors.index.json text: fills *files (unique shard names, in first-seen order)
 * and, for each tensor name, which shard it is in (checked against the shards' own headers later). */
int st_parse_index(const char *json, size_t len, const char *fname, char ***files, int *nfiles);

int st_open_dir(const char *dir, st_model *m);
void st_close(st_model *m);
const st_tensor *st_find(const st_model *m, const char *name);
/* Map (once) and return the tensor's data. */
int st_map(st_model *m, const st_tensor *t, const void **data);
uint64_t st_nbytes(const st_tensor *t);
/* A fingerprint of the checkpoint: every header, the given text (config.json), and up to 4 KiB
 * at the start, middle and end of every tensor's data (read with pread, not mapped). */
int st_fingerprint(const st_model *m, const char *text, unsigned long long *out);
/* `cfsp-mpi verify --model DIR`: read every tensor's data (pread, in panels of a few MiB) and test
 * each element's exponent bits for NaN / Inf (bf16, f16, f32). Prints one line per tensor holding
 * any (its name, count and the first one's element index), in file and data order; 0 if every
 * value is finite (prints a summary), else FAIL naming the first such tensor and element. */
int st_scan_finite(const st_model *m, const char *dir);
/* Resident bytes of this process's mappings of the model's files (the Rss of their
 * /proc/self/smaps entries, matched by device and inode); 0 if smaps cannot be read. */
uint64_t st_resident_bytes(const st_model *st);
#endif
