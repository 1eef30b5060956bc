/*
 * vm.c: VirtualAlloc / VirtualFree / VirtualQuery / VirtualProtect over the broker's section.
 *
 * Reserve claims address space with an anonymous PROT_NONE placeholder (MAP_FIXED_NOREPLACE when an
 * address is given, so nothing the process already maps is ever replaced), registers the range with
 * the broker, then maps the session's section over it at file offset == address. Commit asks the
 * broker (the budget is charged there) and then opens the pages with mprotect; when the commit
 * credit covers it, no round trip is made (credit.c). Decommit closes the
 * pages and the broker punches them out of the section, so a later commit reads zero. Query and
 * Protect never leave the process.
 *
 * Locking: map_lock is held for local bookkeeping only, never across a round trip, so queries go on
 * while another thread waits for the broker. The broker serialises a session's requests and is the
 * authority on what is committed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "client_internal.h"
#include "mb_win32.h"
#include "pages.h"

/* The answer for an address this client does not hold: HOST_E_NOT_OWNER if a sibling client of
 * this process holds it, else `otherwise`. */
static HRESULT not_mine(mb_client *c, uintptr_t addr, HRESULT otherwise)
{
	if (mb_client_other_owner(c, addr))
		return mb_client_error(HOST_E_NOT_OWNER,
				       "%p belongs to another membroker client of this process",
				       (void *)addr);
	return mb_client_error(otherwise, "%p is not in a suitable reservation of this client",
			       (void *)addr);
}

static HRESULT call_range(mb_client *c, int op, uintptr_t addr, size_t len, int level)
{
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Commit commit = MEMBROKER__V1__COMMIT__INIT;
	Membroker__V1__Decommit decommit = MEMBROKER__V1__DECOMMIT__INIT;
	Membroker__V1__Reset reset = MEMBROKER__V1__RESET__INIT;
	Membroker__V1__ResetUndo undo = MEMBROKER__V1__RESET_UNDO__INIT;
	Membroker__V1__Reserve reserve = MEMBROKER__V1__RESERVE__INIT;
	Membroker__V1__Release release = MEMBROKER__V1__RELEASE__INIT;

	/* The broker must have booked every earlier local free before this request: it could
	 * otherwise commit pages, or reserve addresses, that such a free then takes away. */
	mb_credit_report_frees(c);
	req.body_case = op;
	switch (op) {
	case MEMBROKER__V1__REQUEST__BODY_COMMIT:
		commit.address = addr;
		commit.size = len;
		commit.level = (uint32_t)level;
		req.commit = &commit;
		break;
	case MEMBROKER__V1__REQUEST__BODY_DECOMMIT:
		decommit.address = addr;
		decommit.size = len;
		req.decommit = &decommit;
		break;
	case MEMBROKER__V1__REQUEST__BODY_RESET:
		reset.address = addr;
		reset.size = len;
		req.reset = &reset;
		break;
	case MEMBROKER__V1__REQUEST__BODY_RESET_UNDO:
		undo.address = addr;
		undo.size = len;
		req.reset_undo = &undo;
		break;
	case MEMBROKER__V1__REQUEST__BODY_RESERVE:
		reserve.address = addr;
		reserve.size = len;
		req.reserve = &reserve;
		break;
	case MEMBROKER__V1__REQUEST__BODY_RELEASE:
		release.address = addr;
		req.release = &release;
		break;
	default:
		return E_FAIL;
	}
	HRESULT hr = mb_client_call_simple(c, &req);
	uint32_t reattaches = c->reattaches;
	if (hr != HOST_E_CLRNOTAVAILABLE || !atomic_load(&c->lost) ||
	    !mb_client_reconnect_after_drop(c))
		return hr;
	/*
	 * The connection dropped under this request (a broker restart, a listener restarted), and
	 * the client is back. With a new session that was told what the local map holds, a release
	 * or decommit is already done (the map no longer had those pages, and the broker dropped
	 * what no commit covers). Re-attached to its section, whose books the broker kept (a
	 * broker that refused the request while it stopped, and the next one that restored its
	 * books), nothing was done: it is sent again, as anything else is, once.
	 */
	if (op != MEMBROKER__V1__REQUEST__BODY_RELEASE &&
	    op != MEMBROKER__V1__REQUEST__BODY_DECOMMIT)
		return mb_client_call_simple(c, &req);
	if (c->reattaches == reattaches)
		return S_OK;
	hr = mb_client_call_simple(c, &req);
	/* Refused by the books it re-attached to (a reservation it never got to report, say):
	 * the broker does not hold what the map no longer has. The caller frees the pages itself
	 * as when the broker is gone. */
	return hr == S_OK ? S_OK : HOST_E_CLRNOTAVAILABLE;
}

static HRESULT reserve(mb_client *c, uintptr_t want, size_t size, DWORD protect, uintptr_t *out)
{
	size_t span = mb_span_of(size);
	uintptr_t base = 0;
	mb_region *region;
	HRESULT hr;
	int rv;

	if (want != 0) {
		pthread_rwlock_rdlock(&c->map_lock);
		bool taken = mb_regmap_span_overlaps(&c->map, want, span);
		pthread_rwlock_unlock(&c->map_lock);
		if (taken)
			return mb_client_error(MB_E_INVALID_ADDRESS, "%p is already reserved",
					       (void *)want);
	}
	/* Most reservations are made from the reservation credit, without a round trip. */
	hr = mb_credit_reserve(c, want, size, protect, out);
	if (hr != MB_CREDIT_REMOTE)
		return hr;
	rv = mb_vaspace_alloc(&c->va, want, span, &base);
	if (rv == -EEXIST)
		return mb_client_error(MB_E_INVALID_ADDRESS, "%p is already in use", (void *)want);
	if (rv != 0)
		return mb_client_error(E_OUTOFMEMORY, "no address space for %zu bytes", span);
	hr = call_range(c, MEMBROKER__V1__REQUEST__BODY_RESERVE, base, size, 0);
	if (hr != S_OK) {
		mb_vaspace_free(&c->va, base, span);
		return hr;
	}
	pthread_rwlock_wrlock(&c->map_lock);
	rv = mb_regmap_insert(&c->map, base, size, protect, &region);
	pthread_rwlock_unlock(&c->map_lock);
	if (rv != 0) {
		call_range(c, MEMBROKER__V1__REQUEST__BODY_RELEASE, base, 0, 0);
		mb_vaspace_free(&c->va, base, span);
		return mb_client_error(E_OUTOFMEMORY, "no memory for the reservation record");
	}
	*out = base;
	return S_OK;
}

/* Commits the pages touching [addr, addr+size) with protection code, charged at level. */
static HRESULT commit(mb_client *c, uintptr_t addr, size_t size, uint8_t code, int level,
		      uintptr_t *out)
{
	mb_page_range pr;
	HRESULT hr;

	pthread_rwlock_rdlock(&c->map_lock);
	hr = mb_win32_plan_range(&c->map, addr, size, &pr);
	bool inside = hr != S_OK && mb_regmap_find(&c->map, addr) != NULL;
	pthread_rwlock_unlock(&c->map_lock);
	if (hr != S_OK)
		return inside ? mb_client_error(hr, "range crosses the end of its reservation")
			      : not_mine(c, addr, MB_E_INVALID_ADDRESS);
	/* Most commits are served from the commit credit, without a round trip. */
	hr = mb_credit_commit(c, addr, size, code, level, out);
	if (hr != MB_CREDIT_REMOTE)
		return hr;
	size_t len = pr.count * MB_PAGE_SIZE;
	/* The broker must know which of these pages are committed already, or it charges them
	 * again until they are reported. */
	mb_credit_settle(c, pr.start, len);
	hr = call_range(c, MEMBROKER__V1__REQUEST__BODY_COMMIT, pr.start, len, level);
	if (hr != S_OK)
		return hr;
	pthread_rwlock_wrlock(&c->map_lock);
	/* Looked up again: another thread may have released the region meanwhile. */
	pr.region = mb_regmap_find(&c->map, pr.start);
	if (pr.region != NULL) {
		pr.first = mb_region_page(pr.region, pr.start);
		hr = mb_pages_open(c, &pr, code, level);
	}
	pthread_rwlock_unlock(&c->map_lock);
	*out = pr.start;
	return hr;
}

static HRESULT reset(mb_client *c, uintptr_t addr, size_t size, bool undo, uintptr_t *out)
{
	mb_page_range pr;
	HRESULT hr;

	size_t committed = 0;

	pthread_rwlock_rdlock(&c->map_lock);
	hr = mb_win32_plan_reset(&c->map, addr, size, &pr, &committed);
	bool inside = mb_regmap_find(&c->map, addr) != NULL;
	pthread_rwlock_unlock(&c->map_lock);
	if (hr != S_OK)
		return inside ? mb_client_error(hr, "range crosses the end of its reservation")
			      : not_mine(c, addr, MB_E_INVALID_ADDRESS);
	/* Reserved pages hold no data: a reset of them succeeds and changes nothing, so without
	 * a committed page there is nothing to tell the broker. */
	if (committed == 0) {
		*out = pr.start;
		return S_OK;
	}
	mb_credit_settle(c, pr.start, pr.count * MB_PAGE_SIZE);
	hr = call_range(
	    c, undo ? MEMBROKER__V1__REQUEST__BODY_RESET_UNDO : MEMBROKER__V1__REQUEST__BODY_RESET,
	    pr.start, pr.count * MB_PAGE_SIZE, 0);
	if (hr != S_OK)
		return hr;
	pthread_rwlock_wrlock(&c->map_lock);
	mb_region *region = mb_regmap_find(&c->map, pr.start);
	/* Only committed pages carry the reset mark (the broker discards only those). */
	if (region != NULL)
		mb_region_update(&c->map, region, mb_region_page(region, pr.start), pr.count,
				 MB_PAGE_COMMITTED, MB_PAGE_COMMITTED,
				 undo ? MB_PAGE_RESET | MB_PAGE_DISCARDED : 0,
				 undo ? 0 : MB_PAGE_RESET, -1, NULL);
	pthread_rwlock_unlock(&c->map_lock);
	*out = pr.start;
	return S_OK;
}

static HRESULT virtual_free(mb_client *c, void *address, SIZE_T size, DWORD free_type);

static HRESULT virtual_alloc(mb_client *c, void *address, SIZE_T size, DWORD allocation_type,
			     DWORD protect, EMemoryCriticalLevel level, void **mem)
{
	uintptr_t addr = (uintptr_t)address, base, out = 0;
	size_t region_size;
	mb_alloc_op op;
	uint8_t code;
	HRESULT hr;

	if (mem == NULL)
		return mb_client_error(E_POINTER, "mem is NULL");
	*mem = NULL;
	if ((hr = mb_client_usable_or_reconnect(c)) != S_OK)
		return hr;
	hr = mb_win32_check_alloc(addr, size, allocation_type, protect, (int)level, &op, &code);
	if (hr != S_OK)
		return mb_client_error(hr, "invalid allocation type, protection, size or level");

	switch (op) {
	case MB_ALLOC_RESERVE:
	case MB_ALLOC_RESERVE_COMMIT:
		hr = mb_win32_plan_reserve(addr, size, &base, &region_size);
		if (hr != S_OK)
			return mb_client_error(hr, "address range out of bounds");
		if ((hr = reserve(c, base, region_size, protect, &base)) != S_OK)
			return hr;
		if (op == MB_ALLOC_RESERVE_COMMIT) {
			uintptr_t ignored;
			hr = commit(c, base, region_size, code, (int)level, &ignored);
			if (hr != S_OK) {
				char why[MB_WIRE_MAX_DETAIL + 128];
				snprintf(why, sizeof(why), "%s", mb_last_error());
				virtual_free(c, (void *)base, 0, MEM_RELEASE);
				mb_client_error(hr, "%s", why);
				return hr;
			}
		}
		out = base;
		break;
	case MB_ALLOC_COMMIT:
		if ((hr = commit(c, addr, size, code, (int)level, &out)) != S_OK)
			return hr;
		break;
	case MB_ALLOC_RESET:
	case MB_ALLOC_RESET_UNDO:
		if ((hr = reset(c, addr, size, op == MB_ALLOC_RESET_UNDO, &out)) != S_OK)
			return hr;
		break;
	}
	*mem = (void *)out;
	return S_OK;
}

static HRESULT virtual_free(mb_client *c, void *address, SIZE_T size, DWORD free_type)
{
	mb_page_range pr;
	HRESULT hr;

	/* Pages committed locally are decommitted locally; pages the broker must handle are
	 * reported to it first. */
	if (free_type == MEM_DECOMMIT) {
		hr = mb_credit_decommit(c, (uintptr_t)address, size);
		if (hr != MB_CREDIT_REMOTE)
			return hr;
	} else if (free_type == MEM_RELEASE && size == 0) {
		hr = mb_credit_release(c, (uintptr_t)address);
		if (hr != MB_CREDIT_REMOTE)
			return hr;
	}
	/* Pages the broker knows of are freed locally too, reported in the next Sync. */
	hr = mb_credit_free(c, (uintptr_t)address, size, free_type);
	if (hr != MB_CREDIT_REMOTE)
		return hr;
	/* The broker must know the reservation it is asked about. */
	mb_credit_report_reservation(c, (uintptr_t)address);
	size_t refund = 0;
	for (int attempt = 0;; attempt++) {
		pthread_rwlock_wrlock(&c->map_lock);
		hr = mb_win32_plan_free(&c->map, (uintptr_t)address, size, free_type, &pr);
		if (hr != S_OK) {
			pthread_rwlock_unlock(&c->map_lock);
			if (hr == HOST_E_INVALIDOPERATION)
				return not_mine(c, (uintptr_t)address, HOST_E_INVALIDOPERATION);
			return mb_client_error(hr, "invalid free type, size or address");
		}
		/* After three Syncs still racing with this thread's own reports: everything was
		 * reported, the broker credits it; nothing is given back here. */
		if (attempt == 3) {
			refund = 0;
			break;
		}
		uintptr_t lo = free_type == MEM_DECOMMIT ? pr.start : pr.region->base;
		size_t len = free_type == MEM_DECOMMIT ? pr.count * MB_PAGE_SIZE : pr.region->size;
		refund = mb_credit_forget_locked(c, lo, lo + len);
		if (refund != SIZE_MAX)
			break;
		pthread_rwlock_unlock(&c->map_lock);
		mb_credit_sync(c);
	}
	uint64_t session = c->session_id;
	uintptr_t lo;
	size_t len;
	if (free_type == MEM_DECOMMIT) {
		lo = pr.start;
		len = pr.count * MB_PAGE_SIZE;
		/* Closed before the broker frees them, so no write lands in between; the broker
		 * punches them. */
		mb_pages_close(c, &pr, false);
		pthread_rwlock_unlock(&c->map_lock);
		hr = call_range(c, MEMBROKER__V1__REQUEST__BODY_DECOMMIT, lo, len, 0);
	} else {
		size_t span = pr.region->span;
		lo = pr.region->base;
		len = pr.region->size;
		mb_regmap_remove(&c->map, pr.region);
		pthread_rwlock_unlock(&c->map_lock);
		hr = call_range(c, MEMBROKER__V1__REQUEST__BODY_RELEASE, lo, 0, 0);
		mb_vaspace_free(&c->va, lo, span);
	}
	if (hr == HOST_E_CLRNOTAVAILABLE) {
		/* The broker went away before or during this call (a restart, a dropped
		 * connection). The pages are gone from this process's map already, and that map is
		 * what the re-registration after the reconnection tells the next session: the free
		 * has happened. Punch the pages so the next broker finds them empty, and say so: a
		 * caller told it failed would believe them still committed and touch them. */
		if (fallocate(c->section_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)lo,
			      (off_t)len) == 0)
			hr = S_OK;
		/* A broker that refused the call while stopping kept those pages in the books it
		 * left to the next one: the next connection hands the section back and registers
		 * what the map holds, instead of re-attaching to books that still have them. */
		atomic_store(&c->unsure, true);
	}
	/* The broker punched those pages: their credit is free again. (On a refusal, which an
	 * honest client never sees, the credit stays used until the session ends.) */
	if (hr == S_OK)
		mb_credit_refund(c, refund, session);
	return hr;
}

HRESULT mb_virtual_alloc(mb_client *c, void *address, SIZE_T size, DWORD allocation_type,
			 DWORD protect, EMemoryCriticalLevel level, void **mem)
{
	uint64_t sent = mb_thread_round_trips;
	HRESULT hr = virtual_alloc(c, address, size, allocation_type, protect, level, mem);

	if (c != NULL) {
		atomic_fetch_add(&c->alloc_calls, 1);
		if (mb_thread_round_trips != sent)
			atomic_fetch_add(&c->alloc_remote, 1);
	}
	return hr;
}

HRESULT mb_virtual_free(mb_client *c, void *address, SIZE_T size, DWORD free_type)
{
	uint64_t sent = mb_thread_round_trips;
	HRESULT hr = mb_client_usable_or_reconnect(c);

	if (hr == S_OK)
		hr = virtual_free(c, address, size, free_type);
	if (c != NULL) {
		atomic_fetch_add(&c->free_calls, 1);
		if (mb_thread_round_trips != sent)
			atomic_fetch_add(&c->free_remote, 1);
	}
	return hr;
}

HRESULT mb_get_client_stats(mb_client *c, mb_client_stats *stats)
{
	if (stats == NULL)
		return mb_client_error(E_POINTER, "stats is NULL");
	if (c == NULL)
		return mb_client_error(E_INVALIDARG, "client is NULL");
	stats->alloc_calls = atomic_load(&c->alloc_calls);
	stats->alloc_remote = atomic_load(&c->alloc_remote);
	stats->free_calls = atomic_load(&c->free_calls);
	stats->free_remote = atomic_load(&c->free_remote);
	stats->round_trips = atomic_load(&c->round_trips);
	stats->local_commits = atomic_load(&c->local_commits);
	stats->local_decommits = atomic_load(&c->local_decommits);
	stats->syncs = atomic_load(&c->syncs);
	stats->local_reserves = atomic_load(&c->local_reserves);
	stats->local_releases = atomic_load(&c->local_releases);
	pthread_mutex_lock(&c->reconnect_lock);
	stats->reconnects = c->reconnects;
	pthread_mutex_unlock(&c->reconnect_lock);
	return S_OK;
}

HRESULT mb_virtual_query(mb_client *c, const void *address, MEMORY_BASIC_INFORMATION *info,
			 SIZE_T length, SIZE_T *written)
{
	HRESULT hr;

	if (written != NULL)
		*written = 0;
	if (info == NULL || written == NULL)
		return mb_client_error(E_POINTER, "info or written is NULL");
	if (length < sizeof(MEMORY_BASIC_INFORMATION))
		return mb_client_error(MB_E_BAD_LENGTH,
				       "buffer shorter than MEMORY_BASIC_INFORMATION");
	/* Local only: answers even while the broker is away, as the mappings are intact. */
	if (c == NULL)
		return mb_client_error(E_INVALIDARG, "client is NULL");
	if (c->fork_generation != atomic_load(&mb_fork_generation))
		return mb_client_error(HOST_E_CLRNOTAVAILABLE, "client of a forked parent");
	pthread_rwlock_rdlock(&c->map_lock);
	hr = mb_win32_query(&c->map, (uintptr_t)address, info);
	pthread_rwlock_unlock(&c->map_lock);
	if (hr != S_OK)
		return mb_client_error(hr, "address above the user address space");
	*written = sizeof(MEMORY_BASIC_INFORMATION);
	return S_OK;
}

HRESULT mb_virtual_protect(mb_client *c, void *address, SIZE_T size, DWORD new_protect,
			   DWORD *old_protect)
{
	mb_page_range pr;
	uint8_t code;
	DWORD old;
	HRESULT hr;

	if (old_protect == NULL)
		return mb_client_error(E_POINTER, "old_protect is NULL");
	if (c == NULL)
		return mb_client_error(E_INVALIDARG, "client is NULL");
	if (c->fork_generation != atomic_load(&mb_fork_generation))
		return mb_client_error(HOST_E_CLRNOTAVAILABLE, "client of a forked parent");
	pthread_rwlock_wrlock(&c->map_lock);
	hr =
	    mb_win32_plan_protect(&c->map, (uintptr_t)address, size, new_protect, &pr, &code, &old);
	if (hr == S_OK) {
		/* Win32 allows setting the protection a range already has; it costs no system
		 * call here (mprotect is most of VirtualProtect's cost). */
		size_t same = 0;
		while (same < pr.count && mb_region_prot(pr.region, pr.first + same) == code)
			same++;
		if (same == pr.count) {
			pthread_rwlock_unlock(&c->map_lock);
			*old_protect = old;
			return S_OK;
		}
		if (mprotect((void *)pr.start, pr.count * MB_PAGE_SIZE,
			     mb_win32_prot_flags(code)) == 0) {
			mb_region_set_prot(pr.region, pr.first, pr.count, code);
			*old_protect = old;
		} else {
			hr = mb_client_error(E_FAIL, "mprotect failed: %s", strerror(errno));
		}
		pthread_rwlock_unlock(&c->map_lock);
		return hr;
	}
	bool inside = mb_regmap_find(&c->map, (uintptr_t)address) != NULL;
	pthread_rwlock_unlock(&c->map_lock);
	if (hr == MB_E_INVALID_ADDRESS && !inside)
		return not_mine(c, (uintptr_t)address, MB_E_INVALID_ADDRESS);
	return mb_client_error(hr, "cannot change the protection of this range");
}

HRESULT mb_get_memory_load(mb_client *c, DWORD *memory_load, SIZE_T *available_bytes)
{
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__MemoryLoad ml = MEMBROKER__V1__MEMORY_LOAD__INIT;
	mb_response *resp;
	HRESULT hr;

	if (memory_load == NULL || available_bytes == NULL)
		return mb_client_error(E_POINTER, "memory_load or available_bytes is NULL");
	if ((hr = mb_client_usable_or_reconnect(c)) != S_OK)
		return hr;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_MEMORY_LOAD;
	req.memory_load = &ml;
	if ((hr = mb_client_call(c, &req, &resp)) != S_OK)
		return hr;
	hr = (HRESULT)resp->hresult;
	if (hr == S_OK && resp->body_case == MEMBROKER__V1__RESPONSE__BODY_MEMORY_LOAD) {
		*memory_load =
		    resp->memory_load->memory_load > 100 ? 100 : resp->memory_load->memory_load;
		*available_bytes = (SIZE_T)resp->memory_load->available_bytes;
	} else if (hr == S_OK) {
		hr = mb_client_error(E_FAIL, "malformed memory load reply");
	}
	mb_wire_free_response(resp);
	return hr;
}

HRESULT mb_get_session_status(mb_client *c, mb_session_status *status)
{
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__SessionStatus ss = MEMBROKER__V1__SESSION_STATUS__INIT;
	mb_response *resp;
	HRESULT hr;

	if (status == NULL)
		return mb_client_error(E_POINTER, "status is NULL");
	if ((hr = mb_client_usable_or_reconnect(c)) != S_OK)
		return hr;
	/* Local reservations and frees are reported first, so the figures count them. */
	pthread_rwlock_rdlock(&c->map_lock);
	bool unreported = c->npending_res > 0 || c->npending_free > 0;
	pthread_rwlock_unlock(&c->map_lock);
	if (unreported)
		mb_credit_sync(c);
	req.body_case = MEMBROKER__V1__REQUEST__BODY_SESSION_STATUS;
	req.session_status = &ss;
	if ((hr = mb_client_call(c, &req, &resp)) != S_OK)
		return hr;
	hr = (HRESULT)resp->hresult;
	if (hr == S_OK && resp->body_case == MEMBROKER__V1__RESPONSE__BODY_SESSION_STATUS) {
		const Membroker__V1__SessionStatusReply *s = resp->session_status;
		status->budget = s->budget;
		status->total_committed = s->total_committed;
		status->committed = s->committed;
		status->reserved = s->reserved;
		status->reservations = s->reservations;
		status->sessions = s->sessions;
		status->section_allocated = s->section_allocated;
		status->mapped = s->mapped;
		status->waiters = s->waiters;
		status->pressure = s->pressure;
		status->reclaimed = s->reclaimed;
		status->offences = s->offences;
		status->credit = s->credit;
		status->total_credit = s->total_credit;
		status->local_commits = atomic_load(&c->local_commits);
		status->local_decommits = atomic_load(&c->local_decommits);
		status->syncs = atomic_load(&c->syncs);
	} else if (hr == S_OK) {
		hr = mb_client_error(E_FAIL, "malformed session status reply");
	}
	mb_wire_free_response(resp);
	return hr;
}

HRESULT mb_client_address_space(mb_client *c, int op, const void *address, size_t size)
{
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__AddressSpace as = MEMBROKER__V1__ADDRESS_SPACE__INIT;
	HRESULT hr;

	if ((hr = mb_client_usable_or_reconnect(c)) != S_OK)
		return hr;
	if (address == NULL)
		return mb_client_error(E_INVALIDARG, "address is NULL");
	as.op = (uint32_t)op;
	as.address = (uintptr_t)address;
	as.size = size;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_ADDRESS_SPACE;
	req.address_space = &as;
	return mb_client_call_simple(c, &req);
}

static void unmap_region(mb_region *region, void *arg)
{
	mb_client *c = arg;
	mb_vaspace_free(&c->va, region->base, region->span);
}

void mb_vm_unmap_all(mb_client *c)
{
	pthread_rwlock_wrlock(&c->map_lock);
	mb_regmap_clear(&c->map, unmap_region, c);
	pthread_rwlock_unlock(&c->map_lock);
	mb_vaspace_fini(&c->va);
}
