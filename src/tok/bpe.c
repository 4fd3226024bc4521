/* bpe.c — the Hugging Face BPE merge loop (tokenizers' Word::merge_all, without dropout): a min-heap
 * of candidate merges ordered by (rank, position); an entry is stale when the pair now at its
 * position no longer merges into the same new id. See hf.c for how words are cut into symbols. */
#include "tok_internal.h"
#include "cfsp/util/util.h"

static inline int item_less(const bpe_item *a, const bpe_item *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

TOK_HEAP(heap, bpe_heap, bpe_item, item_less)

void hf_merge_all(const pairmap *merges, bpe_sym *s, int32_t n, bpe_heap *heap)
{
    uint32_t rank, nid;
    heap->n = 0;
    for (int32_t i = 0; i + 1 < n; i++)
        if (pairmap_get(merges, s[i].id, s[i + 1].id, &rank, &nid)) heap_push(heap, (bpe_item){ rank, (uint32_t)i, nid });
    while (heap->n) {
        bpe_item top = heap_pop(heap);
        bpe_sym *cur = &s[top.pos];
        if (cur->len == 0 || cur->next == -1) continue;
        int32_t next_pos = cur->next;
        bpe_sym right = s[next_pos];
        if (!pairmap_get(merges, cur->id, right.id, &rank, &nid) || nid != top.nid) continue;
        cur->id = top.nid;
        cur->len += right.len;
        cur->next = right.next;
        s[next_pos].len = 0;
        if (right.next > -1 && right.next < n) s[right.next].prev = (int32_t)top.pos;
        if (cur->prev >= 0 && pairmap_get(merges, s[cur->prev].id, cur->id, &rank, &nid))
            heap_push(heap, (bpe_item){ rank, (uint32_t)cur->prev, nid });
        if (cur->next >= 0 && cur->next < n && pairmap_get(merges, cur->id, s[cur->next].id, &rank, &nid))
            heap_push(heap, (bpe_item){ rank, top.pos, nid });
    }
}
