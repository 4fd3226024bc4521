/* units.h — the stage units of a model (layer: model): every block is one attention unit followed
 * by ceil(m / ffn_slice) FFN slices, channel ranges fixed by the model and --ffn-slice (never by
 * the rank count), each with its flop cost per token. The pipeline (pipeline.h) assigns contiguous
 * runs of units to ranks; the weights (weights.h) are loaded unit by unit. */
#ifndef CFSP_UNITS_H
#define CFSP_UNITS_H
#include "cfsp/format/model_config.h"

typedef struct {
    int layer;
    int slice;                 /* -1: attention; else FFN slice index */
    int nslices;               /* FFN slices of this block */
    int c0, c1;                /* FFN: channel range */
    double cost;               /* flops per token */
} stage_unit;

typedef struct unit_plan {
    int n;
    stage_unit *u;
} unit_plan;

/* every block: attention + ceil(m / ffn_slice) equal FFN slices (ffn_slice 0: one slice) */
void units_plan(const model_config *c, int ffn_slice, int seqlen, unit_plan *p);
void units_free(unit_plan *p);
#endif
