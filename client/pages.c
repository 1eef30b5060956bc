/*
 * pages.c: opening and closing pages in the map and the mapping together (see pages.h).
 */
#include "pages.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <string.h>
#include <sys/mman.h>

#include "client_internal.h"

HRESULT mb_pages_open(mb_client *c, const mb_page_range *pr, uint8_t code, int level)
{
	size_t len = pr->count * MB_PAGE_SIZE;

	if (mb_region_commit_at(&c->map, pr->region, pr->first, pr->count, code, level) < 0)
		return mb_client_error(E_OUTOFMEMORY, "no memory for page state");
	if (mprotect((void *)pr->start, len, mb_win32_prot_flags(code)) != 0) {
		int err = errno;
		mb_region_decommit(&c->map, pr->region, pr->first, pr->count);
		return mb_client_error(E_FAIL, "mprotect failed: %s", strerror(err));
	}
	return S_OK;
}

HRESULT mb_pages_close(mb_client *c, const mb_page_range *pr, bool punch)
{
	size_t len = pr->count * MB_PAGE_SIZE;

	mprotect((void *)pr->start, len, PROT_NONE);
	if (punch && fallocate(c->section_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			       (off_t)pr->start, (off_t)len) != 0)
		return mb_client_error(E_FAIL, "cannot punch the pages out: %s", strerror(errno));
	mb_region_decommit(&c->map, pr->region, pr->first, pr->count);
	return S_OK;
}
