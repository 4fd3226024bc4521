/* evalref.h — the dense model as the reference of an evaluation (layer: model): the distribution
 * metrics of a pruned model against the dense one, llama.cpp's --kl-divergence figures.
 *
 * The last stage records, during the dense evaluation, the logits of every evaluated position (the
 * positions that have a target, in evaluation order) in a scratch file, plus each position's
 * log-sum-exp and argmax in memory; during a pruned evaluation it reads each position's dense row
 * back and computes, in double,
 *     KL(dense || pruned) = sum_j p_d(j) (log p_d(j) - log p_p(j)),   p = softmax(logits),
 * and whether the argmaxes agree (the first index of the maximum, as NumPy's argmax).
 * Bounds on the last rank: disk ntok x V x 4 bytes (the scratch file, created in the given directory
 * and unlinked at once, so it disappears with the process whatever happens), memory ntok x 20 bytes
 * (log-sum-exp, argmax, the pass's KL values) + one row of V floats. Every order is fixed (the
 * evaluation's): the figures are the same at any rank count. */
#ifndef CFSP_EVALREF_H
#define CFSP_EVALREF_H
#include <stdint.h>

typedef struct eval_ref {
    int fd;                /* the dense logits [cap, V] float32 (unlinked scratch file) */
    int V, compare;        /* compare: 0 while recording the dense pass, 1 while comparing */
    int64_t cap, n;        /* positions: expected per pass, seen in this pass */
    int per_window;        /* positions of one evaluation window (consecutive in the pass) */
    double *lse;           /* [cap] dense log-sum-exp */
    int32_t *top1;         /* [cap] dense argmax */
    double *kl;            /* [cap] KL of the current compare pass */
    int64_t agree;         /* compare: positions whose argmax is the dense one */
    float *row;            /* [V] a dense row read back */
    int err;               /* the first I/O errno of the pass (0: none), reported by eval_ref_end */
    int64_t err_pos;
    char dir[4096];
} eval_ref;

typedef struct {
    double mean, median, p99, max;   /* KL per position (nats); percentiles as NumPy's default (linear) */
    double top1;                     /* fraction of positions whose argmax is the dense one */
    int64_t n;
    int nwin;                        /* evaluation windows, and their mean KL each (caller frees win) */
    double *win;
} kl_summary;

/* the scratch file for cap positions (windows of per_window consecutive positions) of a V-word
 * vocabulary in dir: refuses (FAIL naming dir and the bytes) when the file system has less free
 * space than the file needs */
int eval_ref_open(eval_ref *r, const char *dir, int V, int64_t cap, int per_window);
/* the scratch file's bytes (*need) and the free bytes of dir's file system (*avail, -1 unknown) */
void eval_ref_space(const char *dir, int V, int64_t cap, double *need, double *avail);
void eval_ref_close(eval_ref *r);
/* a pass over the same positions: compare = 0 records (the dense model), 1 compares */
void eval_ref_begin(eval_ref *r, int compare);
/* the next evaluated position: its logits [V] and their log-sum-exp (computed by the caller) */
void eval_ref_row(eval_ref *r, const float *logits, double lse);
/* after a pass: FAIL on an I/O error of the pass or a position count other than cap */
int eval_ref_end(const eval_ref *r);
/* the figures of the last compare pass (win: allocated, per window in evaluation order) */
kl_summary eval_ref_summary(const eval_ref *r);
/* NumPy's percentile (method 'linear') of a sorted array of n >= 1 values, q in [0, 1] */
double percentile_sorted(const double *v, int64_t n, double q);
#endif
