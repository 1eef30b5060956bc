/*
 * heap_debug.c: the DebugAlloc side table: file and line of blocks from DebugAlloc, for the leak
 * report. A hash from block address to record, under its own mutex; Free looks here only while
 * records exist (ndebug), so Alloc/Free of a heap that never used DebugAlloc pay one atomic load.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heap_internal.h"

typedef struct dbg_rec {
	uintptr_t ptr;
	int line;
	struct dbg_rec *next;
	char file[];
} dbg_rec;

static size_t dslot(const mb_heap *h, uintptr_t p)
{
	return (size_t)(((uint64_t)p * UINT64_C(0x9E3779B97F4A7C15)) >> 24) & (h->dcap - 1);
}

int mb_heap_debug_add(mb_heap *h, void *p, const char *file, int line)
{
	size_t len = file ? strlen(file) : 0;
	dbg_rec *r = malloc(sizeof(*r) + len + 1);

	if (r == NULL)
		return -1;
	r->ptr = (uintptr_t)p;
	r->line = line;
	memcpy(r->file, file ? file : "", len + 1);
	pthread_mutex_lock(&h->debug_lock);
	if (h->dcount + 1 > h->dcap * 2) {
		size_t ncap = h->dcap ? h->dcap * 2 : 256, ocap = h->dcap;
		dbg_rec **nt = calloc(ncap, sizeof(*nt)), **ot = h->dtable;
		if (nt == NULL) {
			pthread_mutex_unlock(&h->debug_lock);
			free(r);
			return -1;
		}
		h->dtable = nt;
		h->dcap = ncap;
		for (size_t i = 0; i < ocap; i++)
			for (dbg_rec *e = ot[i], *n; e != NULL; e = n) {
				n = e->next;
				size_t k = dslot(h, e->ptr);
				e->next = nt[k];
				nt[k] = e;
			}
		free(ot);
	}
	size_t k = dslot(h, r->ptr);
	r->next = h->dtable[k];
	h->dtable[k] = r;
	h->dcount++;
	atomic_fetch_add(&h->ndebug, 1);
	pthread_mutex_unlock(&h->debug_lock);
	return 0;
}

/* Drops the record of p, if any. */
void mb_heap_debug_remove(mb_heap *h, uintptr_t p)
{
	dbg_rec *gone = NULL;

	if (atomic_load(&h->ndebug) == 0)
		return;
	pthread_mutex_lock(&h->debug_lock);
	if (h->dcap != 0) {
		for (dbg_rec **e = &h->dtable[dslot(h, p)]; *e != NULL; e = &(*e)->next)
			if ((*e)->ptr == p) {
				gone = *e;
				*e = gone->next;
				h->dcount--;
				atomic_fetch_sub(&h->ndebug, 1);
				break;
			}
	}
	pthread_mutex_unlock(&h->debug_lock);
	free(gone);
}

void mb_heap_debug_describe(mb_heap *h, uintptr_t p, char *file, size_t len, int *line)
{
	file[0] = '\0';
	*line = -1;
	if (atomic_load(&h->ndebug) == 0)
		return;
	pthread_mutex_lock(&h->debug_lock);
	if (h->dcap != 0)
		for (const dbg_rec *e = h->dtable[dslot(h, p)]; e != NULL; e = e->next)
			if (e->ptr == p) {
				snprintf(file, len, "%s", e->file[0] ? e->file : "?");
				*line = e->line;
				break;
			}
	pthread_mutex_unlock(&h->debug_lock);
}

void mb_heap_debug_destroy(mb_heap *h)
{
	for (size_t i = 0; i < h->dcap; i++)
		for (dbg_rec *e = h->dtable[i], *n; e != NULL; e = n) {
			n = e->next;
			free(e);
		}
	free(h->dtable);
	pthread_mutex_destroy(&h->debug_lock);
}
