/* safetensors.c — validated safetensors headers, shard indexes, lazy per-tensor mmap, and the
 * resident size of those mappings. */
#include "cfsp/format/safetensors.h"
#include "cfsp/util/err.h"
#include "cfsp/util/json_util.h"
#include "cfsp/util/util.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

size_t dtype_size(dtype_t t) { return t == DT_F32 ? 4 : 2; }
const char *dtype_name(dtype_t t) { return t == DT_F32 ? "F32" : t == DT_F16 ? "F16" : "BF16"; }

int dtype_from_name(const char *s, dtype_t *t)
{
    if (!strcmp(s, "F32")) *t = DT_F32;
    else if (!strcmp(s, "F16")) *t = DT_F16;
    else if (!strcmp(s, "BF16")) *t = DT_BF16;
    else return -1;
    return 0;
}

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;
    while (*s) { h ^= (unsigned char)*s++; h *= 16777619u; }
    return h;
}

static void hash_rebuild(st_model *m)
{
    free(m->hash);
    m->hash_cap = 16;
    while (m->hash_cap < 4 * m->nt + 32) m->hash_cap *= 2;
    m->hash = xmalloc(sizeof(int) * (size_t)m->hash_cap);
    for (int i = 0; i < m->hash_cap; i++) m->hash[i] = -1;
    for (int i = 0; i < m->nt; i++) {
        uint32_t h = name_hash(m->t[i].name) & (uint32_t)(m->hash_cap - 1);
        while (m->hash[h] >= 0) h = (h + 1) & (uint32_t)(m->hash_cap - 1);
        m->hash[h] = i;
    }
}

const st_tensor *st_find(const st_model *m, const char *name)
{
    if (!m->hash) return NULL;
    uint32_t h = name_hash(name) & (uint32_t)(m->hash_cap - 1);
    while (m->hash[h] >= 0) {
        if (!strcmp(m->t[m->hash[h]].name, name)) return &m->t[m->hash[h]];
        h = (h + 1) & (uint32_t)(m->hash_cap - 1);
    }
    return NULL;
}

uint64_t st_nbytes(const st_tensor *t) { return t->end - t->begin; }

static int cmp_begin(const void *a, const void *b)
{
    const st_tensor *x = *(st_tensor *const *)a, *y = *(st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

int st_parse_header(const char *json, size_t len, uint64_t data_size, const char *fname, int file_idx, st_model *m)
{
    cJSON *root = NULL;
    if (json_parse_padded(json, len, fname, 1, &root)) return -1;
    int rc = -1, first = m->nt;
    if (!cJSON_IsObject(root)) { FAIL("%s: safetensors header: expected a JSON object", fname); goto out; }
    /* the format: the header MUST begin with '{' and MAY be padded at its end with spaces (0x20),
     * which json_parse_padded allows and nothing else after the object */
    if (json[0] != '{') { FAIL("%s: safetensors header: must begin with '{' (byte 0 is 0x%02x)", fname, (unsigned char)json[0]); goto out; }
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        const char *name = e->string;
        if (!name) { FAIL("%s: safetensors header: entry without a name", fname); goto out; }
        if (!strcmp(name, "__metadata__")) {
            if (!cJSON_IsObject(e)) { FAIL("%s: '__metadata__': expected an object", fname); goto out; }
            const cJSON *mv;
            cJSON_ArrayForEach(mv, e)
                if (!cJSON_IsString(mv)) {   /* the format: a string-to-string map */
                    FAIL("%s: '__metadata__' entry '%.200s': expected a string (the format allows only string values)", fname, mv->string ? mv->string : "?");
                    goto out;
                }
            continue;
        }
        if (!cJSON_IsObject(e)) { FAIL("%s: tensor '%s': expected an object", fname, name); goto out; }
        if (strlen(name) > 1024) { FAIL("%s: tensor name longer than 1024 bytes", fname); goto out; }
        const char *dt = NULL;
        if (json_get_string(e, "dtype", fname, 1, &dt)) goto out;
        dtype_t dtype;
        if (dtype_from_name(dt, &dtype)) {
            FAIL("%s: tensor '%s': dtype \"%s\" is not supported (expected F32, F16 or BF16)", fname, name, dt);
            goto out;
        }
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsArray(shape)) { FAIL("%s: tensor '%s': field 'shape': expected an array", fname, name); goto out; }
        if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2) {
            FAIL("%s: tensor '%s': field 'data_offsets': expected [begin, end]", fname, name);
            goto out;
        }
        int nd = cJSON_GetArraySize(shape);
        if (nd > ST_MAX_DIMS) { FAIL("%s: tensor '%s': %d dimensions, at most %d supported", fname, name, nd, ST_MAX_DIMS); goto out; }
        st_tensor t;
        memset(&t, 0, sizeof t);
        t.dtype = dtype;
        t.ndim = nd;
        t.file = file_idx;
        uint64_t count = 1;
        for (int d = 0; d < nd; d++) {
            const cJSON *v = cJSON_GetArrayItem(shape, d);
            if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9.0e15 || v->valuedouble != (double)(int64_t)v->valuedouble) {
                FAIL("%s: tensor '%s': shape[%d]: expected a non-negative integer", fname, name, d);
                goto out;
            }
            t.shape[d] = (int64_t)v->valuedouble;
            if (mul_u64(count, (uint64_t)t.shape[d], &count)) { FAIL("%s: tensor '%s': shape product overflows", fname, name); goto out; }
        }
        uint64_t bytes;
        if (mul_u64(count, dtype_size(dtype), &bytes)) { FAIL("%s: tensor '%s': byte size overflows", fname, name); goto out; }
        double ob = cJSON_GetArrayItem(offs, 0)->valuedouble, oe = cJSON_GetArrayItem(offs, 1)->valuedouble;
        if (!cJSON_IsNumber(cJSON_GetArrayItem(offs, 0)) || !cJSON_IsNumber(cJSON_GetArrayItem(offs, 1)) ||
            ob < 0 || oe < 0 || ob > 1.8e19 || oe > 1.8e19 || ob != (double)(uint64_t)ob || oe != (double)(uint64_t)oe) {
            FAIL("%s: tensor '%s': data_offsets: expected two non-negative integers", fname, name);
            goto out;
        }
        t.begin = (uint64_t)ob;
        t.end = (uint64_t)oe;
        if (t.end < t.begin) { FAIL("%s: tensor '%s': data_offsets end %llu < begin %llu", fname, name, (unsigned long long)t.end, (unsigned long long)t.begin); goto out; }
        if (t.end - t.begin != bytes) {
            FAIL("%s: tensor '%s': data_offsets span %llu bytes but shape x dtype %s needs %llu", fname, name,
                 (unsigned long long)(t.end - t.begin), dt, (unsigned long long)bytes);
            goto out;
        }
        if (t.end > data_size) {
            FAIL("%s: tensor '%s': data ends at byte %llu of the data buffer but the file holds only %llu (truncated file?)",
                 fname, name, (unsigned long long)t.end, (unsigned long long)data_size);
            goto out;
        }
        if (st_find(m, name)) { FAIL("%s: tensor '%s' appears twice", fname, name); goto out; }
        t.name = xstrdup(name);
        m->t = xrealloc(m->t, sizeof(st_tensor) * (size_t)(m->nt + 1));
        m->t[m->nt++] = t;
        if (2 * m->nt + 16 > m->hash_cap) hash_rebuild(m);
        else {
            uint32_t h = name_hash(t.name) & (uint32_t)(m->hash_cap - 1);
            while (m->hash[h] >= 0) h = (h + 1) & (uint32_t)(m->hash_cap - 1);
            m->hash[h] = m->nt - 1;
        }
    }
    /* no two tensors of this file may overlap. Sorted by begin, a non-empty tensor overlaps an
     * earlier one iff it begins before the furthest end reached so far (comparing only neighbours
     * misses [0,100) and [50,70) when an empty tensor at 10 sorts between them). Empty tensors
     * occupy no bytes. */
    int n = m->nt - first;
    st_tensor **order = xmalloc(sizeof(st_tensor *) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) order[i] = &m->t[first + i];
    qsort(order, (size_t)n, sizeof *order, cmp_begin);
    const st_tensor *reach = NULL;   /* the non-empty tensor ending furthest so far */
    for (int i = 0; i < n; i++) {
        if (order[i]->end == order[i]->begin) continue;
        if (reach && order[i]->begin < reach->end) {
            FAIL("%s: tensors '%s' and '%s' overlap in the data buffer", fname, reach->name, order[i]->name);
            free(order);
            goto out;
        }
        if (!reach || order[i]->end > reach->end) reach = order[i];
    }
    /* the format: "the byte buffer needs to be entirely indexed, and cannot contain holes" (as
     * safetensors' own validate(): sorted by offsets, each tensor begins where the one before it
     * ends and the last ends at the end of the file). Bytes no tensor owns are where data of
     * another reader's idea of the file would hide. */
    uint64_t cursor = 0;
    const st_tensor *prev = NULL;
    for (int i = 0; i < n; i++) {
        if (order[i]->begin > cursor && !m->holes) {
            char msg[1600];
            snprintf(msg, sizeof msg, "%s: data buffer bytes %llu..%llu belong to no tensor (between %s%s%s and '%s'; the format allows no holes)", fname,
                     (unsigned long long)cursor, (unsigned long long)order[i]->begin, prev ? "'" : "", prev ? prev->name : "the start", prev ? "'" : "",
                     order[i]->name);
            m->holes = xstrdup(msg);
        }
        if (order[i]->end > cursor) { cursor = order[i]->end; prev = order[i]; }
    }
    if (cursor < data_size && !m->holes) {
        char msg[1600];
        snprintf(msg, sizeof msg, "%s: the data buffer has %llu bytes after the last tensor%s%s%s (the format allows no holes)", fname,
                 (unsigned long long)(data_size - cursor), prev ? " '" : "", prev ? prev->name : "", prev ? "'" : "");
        m->holes = xstrdup(msg);
    }
    free(order);
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

int st_parse_index(const char *json, size_t len, const char *fname, char ***files_out, int *nfiles_out)
{
    *files_out = NULL;   /* defined outputs on every failure path */
    *nfiles_out = 0;
    cJSON *root = NULL;
    if (json_parse(json, len, fname, &root)) return -1;
    int rc = -1, nf = 0;
    char **files = NULL;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) { FAIL("%s: field 'weight_map': expected an object", fname); goto out; }
    const cJSON *e;
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e)) { FAIL("%s: weight_map['%s']: expected a file name", fname, e->string ? e->string : "?"); goto out; }
        const char *s = e->valuestring;
        if (!*s || strchr(s, '/') || !strcmp(s, "..")) { FAIL("%s: weight_map['%s'] = \"%s\": expected a plain file name", fname, e->string, s); goto out; }
        int seen = 0;
        for (int i = 0; i < nf && !seen; i++) seen = !strcmp(files[i], s);
        if (!seen) {
            if (nf >= 100000) { FAIL("%s: more than 100000 shard files", fname); goto out; }
            files = xrealloc(files, sizeof(char *) * (size_t)(nf + 1));
            files[nf++] = xstrdup(s);
        }
    }
    if (nf == 0) { FAIL("%s: weight_map is empty", fname); goto out; }
    rc = 0;
out:
    if (rc) { for (int i = 0; i < nf; i++) free(files[i]); free(files); files = NULL; nf = 0; }
    *files_out = files;
    *nfiles_out = nf;
    cJSON_Delete(root);
    return rc;
}

static int open_file(st_model *m, const char *dir, const char *name)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) return FAIL("%s: path too long", dir);
    int fd = input_open(path, "safetensors file");
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return FAIL("%s: cannot stat: %s", path, strerror(errno)); }
    uint64_t size = (uint64_t)st.st_size;
    unsigned char lenbuf[8];
    if (size < 8 || pread(fd, lenbuf, 8, 0) != 8) { close(fd); return FAIL("%s: file is %llu bytes, too short for a safetensors header", path, (unsigned long long)size); }
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | lenbuf[i];
    if (hl > size - 8) { close(fd); return FAIL("%s: header length %llu exceeds the file size %llu", path, (unsigned long long)hl, (unsigned long long)size); }
    if (hl > ST_MAX_HEADER) { close(fd); return FAIL("%s: header length %llu exceeds the %u-byte limit", path, (unsigned long long)hl, ST_MAX_HEADER); }
    char *hdr = xmalloc(hl + 1);
    uint64_t got = 0;
    while (got < hl) {
        ssize_t r = pread(fd, hdr + got, hl - got, (off_t)(8 + got));
        if (r <= 0) { free(hdr); close(fd); return FAIL("%s: cannot read the header", path); }
        got += (uint64_t)r;
    }
    hdr[hl] = 0;
    m->header_hash = fnv1a64(m->header_hash, hdr, hl);
    int idx = m->nfiles;
    m->files = xrealloc(m->files, sizeof(st_file) * (size_t)(m->nfiles + 1));
    m->files[idx].path = xstrdup(path);
    m->files[idx].fd = fd;
    m->files[idx].size = size;
    m->files[idx].data_start = 8 + hl;
    m->nfiles++;
    int rc = st_parse_header(hdr, hl, size - 8 - hl, path, idx, m);
    free(hdr);
    return rc;
}

int st_open_dir(const char *dir, st_model *m)
{
    memset(m, 0, sizeof *m);
    m->header_hash = FNV1A64_INIT;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir) >= (int)sizeof path) return FAIL("%s: path too long", dir);
    if (!path_exists(path)) return open_file(m, dir, "model.safetensors");
    char *text = NULL;
    size_t len = 0;
    if (read_whole_file(path, 64u << 20, &text, &len)) return -1;
    char **files = NULL;
    int nf = 0;
    int rc = st_parse_index(text, len, path, &files, &nf);
    for (int i = 0; rc == 0 && i < nf; i++) rc = open_file(m, dir, files[i]);
    /* every tensor the index names must be in the shard it names */
    cJSON *root = NULL;
    if (rc == 0 && json_parse(text, len, path, &root) == 0) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(root, "weight_map")) {
            const st_tensor *t = st_find(m, e->string);
            if (!t || strcmp(strrchr(m->files[t->file].path, '/') + 1, e->valuestring) != 0) {
                rc = FAIL("%s: tensor '%s' is not in shard '%s'", path, e->string, e->valuestring);
                break;
            }
        }
        cJSON_Delete(root);
    }
    for (int i = 0; i < nf; i++) free(files[i]);
    free(files);
    free(text);
    return rc;
}

int st_map(st_model *m, const st_tensor *tc, const void **data)
{
    st_tensor *t = (st_tensor *)tc;
    if (t->data) { *data = t->data; return 0; }
    const st_file *f = &m->files[t->file];
    uint64_t n = t->end - t->begin;
    if (n == 0) { static const char empty[8]; t->data = empty; *data = t->data; return 0; }
    long page = sysconf(_SC_PAGESIZE);
    uint64_t off = f->data_start + t->begin;
    uint64_t aligned = off - off % (uint64_t)page;
    size_t len = (size_t)(off + n - aligned);
    void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, f->fd, (off_t)aligned);
    if (p == MAP_FAILED) return FAIL("%s: cannot map tensor '%s': %s", f->path, t->name, strerror(errno));
    t->map = p;
    t->map_len = len;
    t->data = (const char *)p + (off - aligned);
    m->bytes_mapped += n;
    *data = t->data;
    return 0;
}

void st_close(st_model *m)
{
    for (int i = 0; i < m->nt; i++) {
        if (m->t[i].map) munmap(m->t[i].map, m->t[i].map_len);
        free(m->t[i].name);
    }
    for (int i = 0; i < m->nfiles; i++) { close(m->files[i].fd); free(m->files[i].path); }
    free(m->files);
    free(m->t);
    free(m->hash);
    free(m->holes);
    memset(m, 0, sizeof *m);
}

int st_fingerprint(const st_model *m, const char *text, unsigned long long *out)
{
    uint64_t h = fnv1a64(m->header_hash, text, strlen(text));
    unsigned char buf[4096];
    for (int i = 0; i < m->nt; i++) {
        const st_tensor *t = &m->t[i];
        const st_file *f = &m->files[t->file];
        uint64_t n = t->end - t->begin, take = n < sizeof buf ? n : sizeof buf;
        uint64_t at[3] = { 0, (n - take) / 2, n - take };
        h = fnv1a64(h, t->name, strlen(t->name));
        for (int k = 0; k < 3 && take; k++) {
            if (pread(f->fd, buf, take, (off_t)(f->data_start + t->begin + at[k])) != (ssize_t)take)
                return FAIL("%s: cannot read tensor '%s'", f->path, t->name);
            h = fnv1a64(h, buf, take);
        }
    }
    *out = h;
    return 0;
}

/* the element index of the first non-finite value of n es-byte values at p, or -1; *count += how many */
static int64_t first_nonfinite(const unsigned char *p, size_t n, dtype_t dt, uint64_t *count)
{
    int64_t first = -1;
    for (size_t i = 0; i < n; i++) {
        int bad;
        if (dt == DT_F32) {
            uint32_t v;
            memcpy(&v, p + 4 * i, 4);
            bad = (v & 0x7f800000u) == 0x7f800000u;
        } else {
            uint16_t v;
            memcpy(&v, p + 2 * i, 2);
            bad = dt == DT_BF16 ? (v & 0x7f80u) == 0x7f80u : (v & 0x7c00u) == 0x7c00u;
        }
        if (bad) {
            if (first < 0) first = (int64_t)i;
            (*count)++;
        }
    }
    return first;
}

static const char *nonfinite_kind(const unsigned char *p, dtype_t dt)
{
    uint32_t v = 0;
    memcpy(&v, p, dtype_size(dt));
    uint32_t mant = dt == DT_F32 ? v & 0x7fffffu : dt == DT_BF16 ? v & 0x7fu : v & 0x3ffu;
    int neg = dt == DT_F32 ? (int)(v >> 31) : (int)((v >> 15) & 1);
    return mant ? "NaN" : neg ? "-Inf" : "+Inf";
}

static int cmp_data_order(const void *a, const void *b, void *m_)
{
    const st_model *m = m_;
    const st_tensor *x = &m->t[*(const int *)a], *y = &m->t[*(const int *)b];
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

int st_scan_finite(const st_model *m, const char *dir)
{
    int *order = xmalloc(sizeof(int) * (size_t)(m->nt ? m->nt : 1));
    for (int i = 0; i < m->nt; i++) order[i] = i;
    qsort_r(order, (size_t)m->nt, sizeof(int), cmp_data_order, (void *)m);
    size_t cap = 8u << 20;
    unsigned char *buf = xmalloc(cap);
    int nbad = 0, rc = 0, first_t = -1;
    int64_t first_e = -1;
    char first_kind[8] = "";
    uint64_t values = 0;
    for (int k = 0; k < m->nt && !rc; k++) {
        const st_tensor *t = &m->t[order[k]];
        const st_file *f = &m->files[t->file];
        size_t es = dtype_size(t->dtype);
        uint64_t n = (t->end - t->begin) / es, done = 0, count = 0;
        int64_t first = -1;
        char kind[8] = "";
        while (done < n) {
            uint64_t take = n - done < cap / es ? n - done : cap / es, got = 0;
            while (got < take * es) {
                ssize_t r = pread(f->fd, buf + got, (size_t)(take * es - got), (off_t)(f->data_start + t->begin + done * es + got));
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) { rc = FAIL("%s: tensor '%s': read failed: %s", f->path, t->name, r < 0 ? strerror(errno) : "unexpected end of file"); break; }
                got += (uint64_t)r;
            }
            if (rc) break;
            int64_t i = first_nonfinite(buf, (size_t)take, t->dtype, &count);
            if (i >= 0 && first < 0) {
                first = (int64_t)done + i;
                snprintf(kind, sizeof kind, "%s", nonfinite_kind(buf + (size_t)i * es, t->dtype));
            }
            done += take;
        }
        values += n;
        if (rc || first < 0) continue;
        char idx[96];
        if (t->ndim == 2) snprintf(idx, sizeof idx, "[%lld, %lld]", (long long)(first / t->shape[1]), (long long)(first % t->shape[1]));
        else snprintf(idx, sizeof idx, "[%lld]", (long long)first);
        printf("%s: tensor '%s' (%s): %llu non-finite values, the first %s at element %s (flat index %lld)\n", f->path, t->name,
               dtype_name(t->dtype), (unsigned long long)count, kind, idx, (long long)first);
        if (nbad++ == 0) { first_t = order[k]; first_e = first; snprintf(first_kind, sizeof first_kind, "%s", kind); }
    }
    free(buf);
    free(order);
    if (rc) return rc;
    if (nbad) {
        const st_tensor *t = &m->t[first_t];
        return FAIL("%s: %d of %d tensors hold non-finite values; the first: tensor '%s', element %lld (%s) of %s", dir, nbad, m->nt, t->name,
                    (long long)first_e, first_kind, m->files[t->file].path);
    }
    printf("%s: OK, %d tensors, %llu values, all finite\n", dir, m->nt, (unsigned long long)values);
    return 0;
}

/* Resident bytes of this process's mappings of the model's safetensors files (the Rss of every
 * /proc/self/smaps entry whose device and inode are one of the files'): the weight pages this
 * rank has touched so far (plus the kernel's fault-around neighbours within each tensor's
 * mapping). Page-table residency is per process, unlike the page cache that ranks share. */
uint64_t st_resident_bytes(const st_model *st)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return 0;
    struct stat *id = xcalloc((size_t)(st->nfiles ? st->nfiles : 1), sizeof *id);
    for (int i = 0; i < st->nfiles; i++) if (fstat(st->files[i].fd, &id[i]) != 0) id[i].st_ino = 0;
    char line[4608];
    int ours = 0;
    uint64_t total = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long kb, ino;
        unsigned maj, mnr;
        if (sscanf(line, "%*x-%*x %*s %*x %x:%x %llu", &maj, &mnr, &ino) == 3) {
            ours = 0;
            for (int i = 0; i < st->nfiles && !ours; i++)
                ours = ino && id[i].st_ino == ino && major(id[i].st_dev) == maj && minor(id[i].st_dev) == mnr;
        } else if (ours && sscanf(line, "Rss: %llu kB", &kb) == 1) total += kb * 1024;
    }
    fclose(f);
    free(id);
    return total;
}
