/* layout.h — the layout of the pruned checkpoint, in one place: the format name, the root and
 * per-tensor attributes, the run's datasets under /cfsp, and every tensor's name, dataset path
 * and shape. The writer (model_h5.c), the reader (reader.c), the verifier and recover's merge
 * (merge.c) take every name from here.
 *
 * A tensor's dataset is its Hugging Face name under the root with '/' for '.'
 * (model.layers.3.mlp.up_proj.weight -> /model/layers/3/mlp/up_proj/weight), stored row-major
 * [rows, cols] (1-D for norms, biases and kept-channel lists) in the source checkpoint's dtype
 * (an HDF5 float type recognised by h5util.h's h5_dtype_of, with a "dtype" attribute), except
 * mlp.kept_channels (int64: the kept channels' indices in the source block) and
 * mlp.down_proj.bias (F32; flap only). Qwen2 blocks add self_attn.{q,k,v}_proj.bias, Qwen3 blocks
 * self_attn.{q,k}_norm.weight (1-D, stored dtype, unpruned: they travel with their block). Every
 * tensor carries its "checksum" (model_h5.h). */
#ifndef CFSP_CKPT_LAYOUT_H
#define CFSP_CKPT_LAYOUT_H
#include "cfsp/format/model_config.h"
#include "cfsp/format/safetensors.h"
#include <stddef.h>
#include <stdint.h>

#define CKPT_FORMAT "cfsp-mpi-pruned/2"
#define CKPT_FORMAT_V1 "cfsp-mpi-pruned/1"   /* the same datasets; /2 changed the checksum function */
#define CKPT_FORMAT_PREFIX "cfsp-mpi-pruned/"

/* root attributes */
#define CKPT_A_FORMAT "format"                /* CKPT_FORMAT */
#define CKPT_A_METHOD "method"                /* "cfsp", "wanda_sp", "flap", "mag_sp" */
#define CKPT_A_RATIO "ratio"                  /* double */
#define CKPT_A_OPTIONS "options"              /* the run's options as JSON */
#define CKPT_OPTIONS_MODEL "model"            /*   its key of the source checkpoint directory */
#define CKPT_A_CONFIG "config"                /* the source config.json plus the pruned FFN sizes: */
#define CKPT_CONFIG_FFN_SIZES "intermediate_sizes" /* [L] ints */
#define CKPT_A_NUM_TENSORS "num_tensors"      /* int64: tensors carrying a checksum; written last */
#define CKPT_A_FILE_CHECKSUM "tensor_checksum" /* u64: FNV-1a over the tensors' checksums in creation order */
/* recover --merge: its provenance, in place of tensor_checksum */
#define CKPT_A_MERGED_FROM "lora_merged_from"
#define CKPT_A_MERGED_PLAN "lora_plan"
#define CKPT_A_MERGED_STEPS "lora_steps"
#define CKPT_A_MERGED_PARAMS "lora_params"
/* tensor dataset attributes */
#define CKPT_A_DTYPE "dtype"                  /* "F32" | "F16" | "BF16" (not on kept_channels) */
#define CKPT_A_CHECKSUM "checksum"            /* u64, model_h5.h's tensor_checksum */
/* the run's per-block results: [L] each */
#define CKPT_DS_IMPORTANCE "/cfsp/importance"          /* double */
#define CKPT_DS_KEEP_FRACTION "/cfsp/keep_fraction"    /* double */
#define CKPT_DS_FFN_SIZES "/cfsp/intermediate_sizes"   /* int64 */

/* The tensors. The block kinds are listed in the order the writer creates each block's datasets. */
typedef enum {
    CK_LN1, CK_LN2, CK_Q, CK_K, CK_V, CK_O, CK_GATE, CK_UP, CK_DOWN, CK_KEPT, CK_BIAS,  /* of block l */
    CK_QB, CK_KB, CK_VB,                  /* of block l, Qwen2: self_attn.{q,k,v}_proj.bias */
    CK_QN, CK_KN,                         /* of block l, Qwen3: self_attn.{q,k}_norm.weight [head_dim] */
    CK_EMBED, CK_NORM, CK_HEAD                                                          /* of the model */
} ckpt_kind;
#define CK_NBLOCK CK_EMBED

/* Does a block of model c hold tensor kind k? Every LLaMA kind but CK_BIAS (flap's, per file);
 * CK_QB/KB/VB with c->qkv_bias, CK_QN/KN with c->qk_norm. */
int ckpt_kind_in_block(const model_config *c, ckpt_kind k);
/* the attention extras of model c in file order (CK_QB, CK_KB, CK_VB / CK_QN, CK_KN); their number */
int ckpt_attn_extras(const model_config *c, ckpt_kind out[5]);

/* the Hugging Face name of tensor kind (block l for the block kinds), e.g. model.layers.3.mlp.up_proj.weight */
void ckpt_tensor_name(ckpt_kind kind, int l, char *out, size_t n);
/* the dataset of the tensor called name: "/" + name with '/' for '.' */
void ckpt_dataset_path(const char *name, char *out, size_t n);
/* The shape of tensor kind of model c whose block has m FFN channels: returns the number of
 * dimensions (1 or 2), dims[0] = rows, dims[1] = columns (0 for 1-D). */
int ckpt_tensor_shape(const model_config *c, ckpt_kind kind, int64_t m, int64_t dims[2]);
/* n fp32 values in the stored dtype dt (bf16 / f16 rounded to nearest even) */
void ckpt_store_f32(dtype_t dt, const float *src, void *dst, size_t n);
#endif
