/* results.c — results.json, the Markdown summary and the SVG plot (see results.h). */
#include "cfsp/report/results.h"
#include "cfsp/model/matmul.h"
#include "cfsp/util/util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static char *markdown(const cJSON *r)
{
    size_t cap = 1 << 16, len = 0;
    char *s = xmalloc(cap);
#define APP(...) do { int k_ = snprintf(s + len, cap - len, __VA_ARGS__); if (k_ > 0) len += (size_t)k_; if (len >= cap - 512) { cap *= 2; s = xrealloc(s, cap); } } while (0)
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(r, "model");
    const cJSON *dense = cJSON_GetObjectItemCaseSensitive(r, "dense");
    APP("# cfsp-mpi results\n\nmodel: `%s`, ranks: %g, calibration: %g x %g tokens\n\n", str(model, "path"),
        num(r, "nranks"), num(cJSON_GetObjectItemCaseSensitive(r, "calibration"), "nsamples"),
        num(cJSON_GetObjectItemCaseSensitive(r, "calibration"), "seqlen"));
    APP("| method | ratio | FFN channels kept | params kept | perplexity | channels per block |\n|---|---|---|---|---|---|\n");
    if (dense) APP("| dense | 0 | 100%% | %.0f | %.4f | |\n", num(model, "params"), num(dense, "ppl"));
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(r, "pruned")) {
        APP("| %s | %g | %.1f%% | %.0f | %.4f | ", str(p, "method"), num(p, "ratio"), 100 * num(p, "ffn_kept_fraction"),
            num(p, "params"), num(p, "ppl"));
        const cJSON *c;
        int first = 1;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(p, "keep_counts")) { APP("%s%d", first ? "" : " ", c->valueint); first = 0; }
        APP(" |\n");
    }
    return s;
#undef APP
}

static char *svg_plot(const cJSON *r)
{
    size_t cap = 1 << 16, len = 0;
    char *s = xmalloc(cap);
#define APP(...) do { int k_ = snprintf(s + len, cap - len, __VA_ARGS__); if (k_ > 0) len += (size_t)k_; if (len >= cap - 512) { cap *= 2; s = xrealloc(s, cap); } } while (0)
    const char *colors[] = { "#1f77b4", "#d62728", "#2ca02c", "#9467bd" };
    const char *methods[] = { "cfsp", "wanda_sp", "flap", "mag_sp" };
    double W = 640, H = 400, x0 = 70, y0 = 30, pw = 520, ph = 310, rmax = 0, lmin = INFINITY, lmax = -INFINITY;
    double dense = num(cJSON_GetObjectItemCaseSensitive(r, "dense"), "ppl");
    const cJSON *p;
    if (isfinite(dense)) { lmin = lmax = log(dense); }
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(r, "pruned")) {
        double v = num(p, "ppl");
        if (num(p, "ratio") > rmax) rmax = num(p, "ratio");
        if (isfinite(v) && v > 0) { if (log(v) < lmin) lmin = log(v); if (log(v) > lmax) lmax = log(v); }
    }
    if (!(rmax > 0)) rmax = 1;
    if (!isfinite(lmin)) { lmin = 0; lmax = 1; }
    if (lmax - lmin < 1e-6) { lmin -= 0.5; lmax += 0.5; }
    APP("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    APP("<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"%g\" y=\"18\">perplexity (log scale) vs pruning ratio</text>\n", x0);
    APP("<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"black\"/>\n", x0, y0, pw, ph);
    for (int i = 0; i <= 5; i++) {
        double fr = i / 5.0, lv = lmin + fr * (lmax - lmin);
        APP("<text x=\"%g\" y=\"%g\" text-anchor=\"end\">%.3g</text>\n", x0 - 4, y0 + ph - fr * ph + 4, exp(lv));
        APP("<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%.2f</text>\n", x0 + fr * pw, y0 + ph + 16, fr * rmax);
    }
    APP("<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">ratio</text>\n", x0 + pw / 2, y0 + ph + 34);
    for (int mi = 0; mi < 4; mi++) {
        char pts[8192] = "";
        int n = 0;
        if (isfinite(dense)) { snprintf(pts, sizeof pts, "%g,%g ", x0, y0 + ph - (log(dense) - lmin) / (lmax - lmin) * ph); n++; }
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(r, "pruned")) {
            if (strcmp(str(p, "method"), methods[mi]) || !(num(p, "ppl") > 0)) continue;
            size_t l = strlen(pts);
            snprintf(pts + l, sizeof pts - l, "%g,%g ", x0 + num(p, "ratio") / rmax * pw,
                     y0 + ph - (log(num(p, "ppl")) - lmin) / (lmax - lmin) * ph);
            n++;
        }
        if (n < 2) continue;
        APP("<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"%s\"/>\n", colors[mi], pts);
        APP("<text x=\"%g\" y=\"%g\" fill=\"%s\">%s</text>\n", x0 + 10, y0 + 16 + 14 * mi, colors[mi], methods[mi]);
    }
    APP("</svg>\n");
    return s;
#undef APP
}

int results_write(const cJSON *r, const char *json_path, const char *md_path, const char *svg_path)
{
    char *json = cJSON_Print(r);
    int rc = write_text_file(json_path, json);
    free(json);
    if (rc) return -1;
    char *md = markdown(r);
    rc = write_text_file(md_path, md);
    free(md);
    if (rc || !svg_path) return rc;
    char *svg = svg_plot(r);
    rc = write_text_file(svg_path, svg);
    free(svg);
    return rc;
}

cJSON *results_add_compute(cJSON *parent)
{
    const mm_info *mi = mm_current();
    cJSON *cp = cJSON_AddObjectToObject(parent, "compute");
    cJSON_AddStringToObject(cp, "requested", compute_names[mi->requested]);
    cJSON_AddStringToObject(cp, "mode", compute_names[mi->mode]);
    cJSON_AddStringToObject(cp, "reason", mi->reason);
    cJSON_AddStringToObject(cp, "onednn_isa", mi->isa);
    cJSON_AddStringToObject(cp, "onednn_impl", mi->impl);
    cJSON_AddBoolToObject(cp, "native_bf16", mi->native);
    cJSON_AddBoolToObject(cp, "onednn_bf16", mi->onednn_bf16);
    cJSON_AddBoolToObject(cp, "cpu_amx_bf16", mi->cpu_amx_bf16);
    cJSON_AddBoolToObject(cp, "cpu_avx512_bf16", mi->cpu_avx512_bf16);
    return cp;
}
