/* results.c — results.json, the Markdown summary and the SVG plot (see results.h). */
#include "cfsp/report/results.h"
#include "cfsp/model/matmul.h"
#include "cfsp/util/util.h"
#include <math.h>
#include <stdarg.h>
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
    APP("| method | ratio | FFN channels kept | params kept | perplexity | ppl / dense | KL mean | KL median | KL p99 | top-1 agreement | channels per block |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n");
    if (dense) APP("| dense | 0 | 100%% | %.0f | %.4f | 1 | 0 | 0 | 0 | 1 | |\n", num(model, "params"), num(dense, "ppl"));
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(r, "pruned")) {
        APP("| %s | %g | %.1f%% | %.0f | %.4f | ", str(p, "method"), num(p, "ratio"), 100 * num(p, "ffn_kept_fraction"),
            num(p, "params"), num(p, "ppl"));
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(p, "vs_dense");
        if (cJSON_IsObject(k))
            APP("%.4f | %.5f | %.5f | %.4f | %.4f | ", num(k, "ppl_ratio"), num(k, "kl_mean"), num(k, "kl_median"), num(k, "kl_p99"),
                num(k, "top1_agreement"));
        else APP("| | | | | ");
        const cJSON *c;
        int first = 1;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(p, "keep_counts")) { APP("%s%d", first ? "" : " ", c->valueint); first = 0; }
        APP(" |\n");
    }
    return s;
#undef APP
}

/* a growing text buffer */
typedef struct { char *s; size_t len, cap; } sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if ((size_t)k < b->cap - b->len) { b->len += (size_t)k; return; }
        b->cap = 2 * b->cap + (size_t)k;
        b->s = xrealloc(b->s, b->cap);
    }
}

/* the value a panel plots of a pruned entry: its perplexity, or its mean KL against the dense model */
static double entry_ppl(const cJSON *p) { return num(p, "ppl"); }
static double entry_kl(const cJSON *p) { return num(cJSON_GetObjectItemCaseSensitive(p, "vs_dense"), "kl_mean"); }

/* One panel at x offset ox: value(entry) against the ratio, a line per method, the dense model at
 * ratio 0 with value dense_v (log scale: positive values only). */
static void svg_panel(sbuf *b, const cJSON *r, double ox, const char *title, double (*value)(const cJSON *),
                      double dense_v, int logscale)
{
    static const char *colors[] = { "#1f77b4", "#d62728", "#2ca02c", "#9467bd" };
    static const char *methods[] = { "cfsp", "wanda_sp", "flap", "mag_sp" };
    double x0 = ox + 70, y0 = 30, pw = 520, ph = 310, rmax = 0, lmin = INFINITY, lmax = -INFINITY;
#define TR(v) (logscale ? log(v) : (v))
    const cJSON *p;
    int ok_dense = isfinite(dense_v) && (!logscale || dense_v > 0);
    if (ok_dense) lmin = lmax = TR(dense_v);
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(r, "pruned")) {
        double v = value(p);
        if (num(p, "ratio") > rmax) rmax = num(p, "ratio");
        if (isfinite(v) && (!logscale || v > 0)) { if (TR(v) < lmin) lmin = TR(v); if (TR(v) > lmax) lmax = TR(v); }
    }
    if (!(rmax > 0)) rmax = 1;
    if (!isfinite(lmin)) { lmin = 0; lmax = 1; }
    if (lmax - lmin < 1e-6) { lmin -= 0.5; lmax += 0.5; }
    sb_printf(b, "<text x=\"%g\" y=\"18\">%s</text>\n", x0, title);
    sb_printf(b, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"black\"/>\n", x0, y0, pw, ph);
    for (int i = 0; i <= 5; i++) {
        double fr = i / 5.0, lv = lmin + fr * (lmax - lmin);
        sb_printf(b, "<text x=\"%g\" y=\"%g\" text-anchor=\"end\">%.3g</text>\n", x0 - 4, y0 + ph - fr * ph + 4, logscale ? exp(lv) : lv);
        sb_printf(b, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%.2f</text>\n", x0 + fr * pw, y0 + ph + 16, fr * rmax);
    }
    sb_printf(b, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">ratio</text>\n", x0 + pw / 2, y0 + ph + 34);
    for (int mi = 0; mi < 4; mi++) {
        sbuf pts = { xmalloc(256), 0, 256 };
        pts.s[0] = 0;
        int n = 0;
        if (ok_dense) { sb_printf(&pts, "%g,%g ", x0, y0 + ph - (TR(dense_v) - lmin) / (lmax - lmin) * ph); n++; }
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(r, "pruned")) {
            double v = value(p);
            if (strcmp(str(p, "method"), methods[mi]) || !isfinite(v) || (logscale && !(v > 0))) continue;
            sb_printf(&pts, "%g,%g ", x0 + num(p, "ratio") / rmax * pw, y0 + ph - (TR(v) - lmin) / (lmax - lmin) * ph);
            n++;
        }
        if (n >= 2) {
            sb_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"%s\"/>\n", colors[mi], pts.s);
            sb_printf(b, "<text x=\"%g\" y=\"%g\" fill=\"%s\">%s</text>\n", x0 + 10, y0 + 16 + 14 * mi, colors[mi], methods[mi]);
        }
        free(pts.s);
    }
#undef TR
}

/* perplexity vs ratio; beside it, when the pruned models were compared with the dense one (--kl),
 * the mean KL divergence vs ratio */
static char *svg_plot(const cJSON *r)
{
    int has_kl = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(r, "pruned")) has_kl |= isfinite(entry_kl(p));
    double W = has_kl ? 1280 : 640, H = 400;
    sbuf b = { xmalloc(1 << 14), 0, 1 << 14 };
    sb_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    sb_printf(&b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    svg_panel(&b, r, 0, "perplexity (log scale) vs pruning ratio", entry_ppl, num(cJSON_GetObjectItemCaseSensitive(r, "dense"), "ppl"), 1);
    if (has_kl) svg_panel(&b, r, 640, "mean KL(dense || pruned) per token (nats) vs pruning ratio", entry_kl, 0.0, 0);
    sb_printf(&b, "</svg>\n");
    return b.s;
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
