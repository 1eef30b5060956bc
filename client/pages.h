/*
 * pages.h: opening and closing committed pages in this process, the one place where the local map
 * and the mapping's protections change together (pages.c). Used for commits and decommits the
 * broker carried out (vm.c) and for those made locally against commit credit (credit.c).
 *
 * The caller holds map_lock for writing, so VirtualQuery never sees a half-done change.
 */
#ifndef MB_CLIENT_PAGES_H
#define MB_CLIENT_PAGES_H

#include <stdbool.h>
#include <stdint.h>

#include "mb_win32.h"
#include "membroker.h"

typedef struct mb_client mb_client;

/*
 * Marks the pages of pr committed at level (the EMemoryCriticalLevel the map keeps for each newly
 * committed page, which the client re-registers them at after a broker restart without its books;
 * pages committed already keep theirs) with protection code in the map, and opens them with
 * mprotect. S_OK; E_OUTOFMEMORY when there is no memory for page state, or E_FAIL when mprotect
 * fails (the reason recorded for mb_last_error); on failure the map is as before.
 */
HRESULT mb_pages_open(mb_client *c, const mb_page_range *pr, uint8_t code, int level);

/*
 * Closes the pages of pr (PROT_NONE first, so no write lands after), then, with punch, punches them
 * out of the section through this process's own descriptor (a decommit the broker does not carry
 * out), then marks them decommitted in the map. S_OK; E_FAIL when the punch fails: the pages are
 * then closed but still committed in the map (the caller lets the broker decommit them).
 */
HRESULT mb_pages_close(mb_client *c, const mb_page_range *pr, bool punch);

#endif
