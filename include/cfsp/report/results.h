/* results.h — the run report written by the root: results.json (machine-readable), results.md
 * (a short table) and ppl_vs_ratio.svg (perplexity against pruning ratio, one line per method). */
#ifndef CFSP_RESULTS_H
#define CFSP_RESULTS_H
#include <cjson/cJSON.h>

/* parent.compute: the matrix-product backend chosen for this process (model/matmul.h's mm_current:
 * requested and chosen mode, the reason, oneDNN's ISA and implementation, the CPU's bf16 flags) */
cJSON *results_add_compute(cJSON *parent);
/* write results.json, results.md and (svg_path not NULL) ppl_vs_ratio.svg from the results object
 * to exactly these paths (the caller's temporary names, renamed by the caller): every write
 * checked and fsynced; FAIL (the failed file removed) on any error */
int results_write(const cJSON *results, const char *json_path, const char *md_path, const char *svg_path);
#endif
