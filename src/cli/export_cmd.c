/* export_cmd.c — `cfsp-mpi export`: command line of the exporters (see export.h). Serial: main.c
 * runs it on rank 0 only, so it works with or without mpirun. */
#include "cfsp/cli/commands.h"
#include "cfsp/export/export.h"
#include "cfsp/util/err.h"
#include "cfsp/util/opts.h"
#include "cfsp/util/util.h"
#include <stdio.h>
#include <string.h>

typedef struct {
    char in[4096], out[4096], model[4096], name[4096];
    int format, force;
    uint64_t shard, align;
} export_opts;

static const char *const format_names[] = { "hf", "gguf", "hf-padded", "gguf-padded", "hf-llama" };
enum { F_HF, F_GGUF, F_HF_PADDED, F_GGUF_PADDED, F_HF_LLAMA };
#define O(...) OPT(export_opts, __VA_ARGS__)
static const opt_def export_table[] = {
    O(OPT_STR, in, "IN.h5", NULL, NULL, "a pruned checkpoint of cfsp-mpi (with one path, OUT: the unpruned --model DIR is exported, ratio 0)", .flags = OPT_POSITIONAL),
    O(OPT_STR, out, "OUT", NULL, NULL, "gguf: a GGUF v3 file (llama.cpp architecture 'deci', per-layer FFN sizes; Qwen2's q/k/v biases "
      "included); hf: a directory (DeciLMForCausalLM / nemotron-nas config.json with block_configs, safetensors shards + "
      "model.safetensors.index.json, the tokenizer files); hf-padded / gguf-padded: the same in the model's own architecture "
      "(llama, mistral, qwen2, qwen3) with every block's FFN zero-padded to the widest kept block: exactly the pruned model, "
      "smaller only by what the widest block saves; hf-llama: hf-padded of a LLaMA-family model (llama, mistral, DeciLM without "
      "biases: LlamaForCausalLM / MistralForCausalLM, loaded by stock transformers and vLLM), refused for qwen2 / qwen3", .flags = OPT_POSITIONAL),
    O(OPT_ENUM, format, "format", NULL, NULL, "the output format: GGUF (llama.cpp) or Hugging Face safetensors, per-block sizes or padded uniform (a qwen3 model: padded only, unless its blocks are one size)",
      .flags = OPT_REQUIRED, .names = format_names, .nnames = 5),
    O(OPT_STR, model, "model", NULL, NULL, "the source checkpoint: tokenizer files (not given: the model path recorded in IN.h5)", .flags = OPT_NONEMPTY),
    O(OPT_SIZE, shard, "shard-size", "5GB", NULL, "hf: largest safetensors file in bytes (suffix KB/MB/GB = 1e3/1e6/1e9, KiB/MiB/GiB)"),
    O(OPT_I64, align, "alignment", "32", "[1, 1073741824]", "gguf: general.alignment, a power of two"),
    O(OPT_STR, name, "name", NULL, NULL, "gguf: general.name (not given: the source directory's name, method and ratio)"),
    O(OPT_BOOL, force, "force", "0", NULL, "replace an existing OUT"),
};
static const opt_table export_opt_table = {
    "export", "cfsp-mpi export",
    "cfsp-mpi export --format gguf|hf|gguf-padded|hf-padded|hf-llama [options] IN.h5 OUT      a pruned checkpoint of cfsp-mpi\n"
    "       cfsp-mpi export --format gguf|hf|gguf-padded|hf-padded|hf-llama --model DIR [options] OUT  the unpruned model (ratio 0)",
    "cfsp-mpi export — a checkpoint as GGUF (llama.cpp) or as a Hugging Face directory", export_table,
    sizeof export_table / sizeof export_table[0] };

int export_main(int argc, char **argv)
{
    export_opts o;
    memset(&o, 0, sizeof o);
    opt_result res;
    int prc = opts_parse(&export_opt_table, argc, argv, 1, &o, &res);
    if (prc) return prc;                              /* 1: --help printed */
    if (res.npos == 0) return FAIL("export: no output given (see cfsp-mpi export --help)");
    if (res.npos == 1) { memcpy(o.out, o.in, sizeof o.out); o.in[0] = 0; }   /* export --model DIR OUT */
    if (!o.in[0] && !o.model[0]) return FAIL("export: one path given: export IN.h5 OUT, or the unpruned model with --model DIR OUT");
    if (o.align & (o.align - 1)) {
        char w[4200];
        return FAIL("%s = '%llu': expected a power of two", opts_where(&export_opt_table, &res, "alignment", w, sizeof w), (unsigned long long)o.align);
    }
    const char *in = o.in[0] ? o.in : NULL, *out = o.out, *model = o.model[0] ? o.model : NULL, *name = o.name[0] ? o.name : NULL;
    if (!out[0]) return FAIL("export: empty output path");
    if (!o.force && path_exists(out)) return FAIL("%s: output exists (use --force to overwrite)", out);
    ckpt_source s;
    int rc = in ? ckpt_open(in, model, &s) : ckpt_open_dir(model, &s);
    /* hf-llama: the padded HF form of a LLaMA-family model, by that name; a Qwen model's padded
     * form is Qwen2/Qwen3ForCausalLM (biases, q/k norms), not a LlamaForCausalLM */
    if (!rc && o.format == F_HF_LLAMA && (s.cfg.family == FAMILY_QWEN2 || s.cfg.family == FAMILY_QWEN3 || s.cfg.qkv_bias)) {
        rc = FAIL("%s: --format hf-llama: a %s model is no LlamaForCausalLM (%s); use --format hf-padded, which writes %s",
                  in ? in : model, s.cfg.family == FAMILY_QWEN3 ? "qwen3" : "qwen2", s.cfg.family == FAMILY_QWEN3 ? "q/k norms" : "q/k/v biases",
                  s.cfg.family == FAMILY_QWEN3 ? "Qwen3ForCausalLM" : "Qwen2ForCausalLM");
    }
    if (o.format == F_HF_LLAMA) o.format = F_HF_PADDED;
    int padded = o.format == F_HF_PADDED || o.format == F_GGUF_PADDED;
    ex_options eo = { .out = out, .force = o.force, .alignment = (uint32_t)o.align, .shard_bytes = o.shard, .name = name, .padded = padded };
    if (!rc && padded) ckpt_pad_ffn(&s, ckpt_max_ffn(&s));
    if (!rc) rc = o.format == F_GGUF || o.format == F_GGUF_PADDED ? export_gguf(&s, &eo) : export_hf(&s, &eo);
    ckpt_close(&s);
    return rc;
}
