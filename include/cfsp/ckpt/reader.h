/* reader.h — reading a model's tensors by Hugging Face name, serially: a pruned checkpoint (the
 * HDF5 file of model_h5.h, in the layout of layout.h), or an unpruned Hugging Face directory
 * (config.json + safetensors) read as the checkpoint of ratio 0. Opening checks everything up
 * front — the format attribute, the recorded config, every tensor's presence, rank, shape and
 * float dtype, the FFN sizes against the config's intermediate_sizes — so that reading afterwards
 * is only I/O; tensors are then read row panel by row panel as raw stored bytes (no conversion).
 * `cfsp-mpi export` and `cfsp-mpi recover` read models through it. Every input problem is a
 * one-line FAIL naming the file and the field. */
#ifndef CFSP_CKPT_READER_H
#define CFSP_CKPT_READER_H
#include "cfsp/ckpt/layout.h"
#include "cfsp/format/model_config.h"
#include "cfsp/format/safetensors.h"
#include <hdf5.h>
#include <stdint.h>

typedef struct {
    char name[128];            /* Hugging Face name, e.g. model.layers.3.mlp.up_proj.weight */
    ckpt_kind kind;
    dtype_t dtype;             /* stored dtype */
    int ndim;                  /* 1 (norms, biases) or 2 */
    int64_t rows, cols;        /* [rows, cols] row-major; cols = 1 for 1-D */
    int layer;                 /* block index, -1 for embeddings / final norm / lm_head */
    char h5path[160];          /* HDF5 dataset (pruned checkpoint) */
    const st_tensor *st;       /* safetensors tensor (directory) */
    int64_t stored_rows, stored_cols;   /* after ckpt_pad_ffn: the stored shape (rows/cols: the padded one); else 0 */
    int ck_has;                /* a pruned checkpoint of CKPT_FORMAT: ck_want is the dataset's "checksum" */
    uint64_t ck_want;
} ckpt_tensor;

typedef struct {
    char in_path[4096];        /* the HDF5 file, "" for a safetensors directory (ratio 0) */
    char src_dir[4096];        /* the source checkpoint (tokenizer files; the weights for ratio 0) */
    model_config cfg;          /* the model: cfg.ffn[l] = its (pruned) FFN sizes */
    char *config_text;         /* the source config.json text (the HDF5 'config' attribute) */
    char method[32];           /* "cfsp", ... or "none" (ratio 0) */
    double ratio;              /* -1 if the file records none */
    int has_bias;              /* some block carries mlp.down_proj.bias (flap) */
    int bias_layer;            /* the first such block, -1 if none */
    ckpt_tensor *t;            /* embeddings, blocks (norm, attention, norm, FFN), final norm, lm_head */
    int nt;                    /* (unless tied), then the biases */
    hid_t h5;
    st_model st;
    int st_open;
    int *stored_ffn;           /* after ckpt_pad_ffn: each block's stored FFN size; else NULL */
    uint64_t *ck_sum;          /* [nt] checksum of the stored rows read so far, in order (lazy) */
    int64_t *ck_next;          /* [nt] the next stored row expected; -1: not in order (or done) */
    int ck_verify;             /* CKPT_FORMAT (not V1): the reads verify the tensor checksums */
} ckpt_source;

/* Open a pruned HDF5 file; src_dir_override (or NULL) replaces the model directory recorded in its
 * options attribute (FAIL if there is neither). */
int ckpt_open(const char *path, const char *src_dir_override, ckpt_source *s);
/* Open an unpruned Hugging Face directory (config.json + safetensors; no biases). */
int ckpt_open_dir(const char *dir, ckpt_source *s);
/* Close whatever an open left behind, also after it failed. */
void ckpt_close(ckpt_source *s);
const ckpt_tensor *ckpt_find(const ckpt_source *s, const char *name);
/* Present every block's FFN as m channels (m >= every block's size): gate/up_proj [m, D] with zero
 * rows, down_proj [D, m] with zero columns beyond the stored ones, cfg.ffn[l] = m. A zero channel
 * adds exactly nothing (silu(0) * 0 = 0, times a zero column), so this is the pruned model in a
 * uniform architecture (the exporters' padded forms). Then ckpt_read_rows returns the zeros. */
void ckpt_pad_ffn(ckpt_source *s, int64_t m);
/* the same for the blocks with no FFN channel only: one zero channel each (llama.cpp's deci graph
 * skips a block whose n_ff is 0, its attention too); returns how many blocks were padded */
int ckpt_pad_empty_ffn(ckpt_source *s);
/* block l's stored FFN size (before any padding) */
int ckpt_stored_ffn(const ckpt_source *s, int l);
/* the widest FFN of s */
int64_t ckpt_max_ffn(const ckpt_source *s);
/* rows [r0, r0 + n) of t, raw stored bytes (no conversion), into buf. For a pruned checkpoint of
 * CKPT_FORMAT the reads also verify the data: the tensor checksum (model_h5.h, position-keyed, so
 * panels add up) of the stored rows is accumulated while a tensor is read in order from row 0, and
 * compared with the dataset's "checksum" attribute once its last stored row has been read (FAIL
 * naming the file and the dataset on a mismatch). Padding (ckpt_pad_ffn) is not hashed; reads out
 * of order are not verified; CKPT_FORMAT_V1 files (another checksum function) are read unverified. */
int ckpt_read_rows(ckpt_source *s, const ckpt_tensor *t, int64_t r0, int64_t n, void *buf);
uint64_t ckpt_tensor_bytes(const ckpt_tensor *t);
#endif
