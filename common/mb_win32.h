/*
 * mb_win32.h: the Win32 virtual-memory rules, in one place for the client library and the broker.
 *
 * Pure functions: they check arguments and plan an operation against a region map, and never touch
 * memory, sockets or the broker. The client runs every check before a request leaves the process;
 * the broker runs the range checks again because clients are untrusted.
 *
 * Protection codes: a protection value is stored per page as a one-byte code (base protection plus
 * the PAGE_NOCACHE / PAGE_WRITECOMBINE modifiers); mb_win32_protect_of() turns it back into the
 * PAGE_* value VirtualQuery reports, mb_win32_prot_flags() into mmap PROT_* flags.
 */
#ifndef MB_WIN32_H
#define MB_WIN32_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "membroker.h"
#include "mb_regmap.h"

/* Highest user address a reservation may reach (exclusive): 47-bit user space on x86-64/arm64. */
#define MB_ADDRESS_LIMIT ((uintptr_t)1 << 47)
/* Lowest address a reservation may start at (the first 64 KiB are never handed out, as on Windows).
 */
#define MB_ADDRESS_MIN ((uintptr_t)MB_GRANULARITY)

/*
 * Checks a protection value for VirtualAlloc (and MEM_RESET, where it is ignored but must be valid)
 * or VirtualProtect. Exactly one base value among PAGE_NOACCESS .. PAGE_EXECUTE_READWRITE, optional
 * PAGE_NOCACHE or PAGE_WRITECOMBINE (not both, not with PAGE_NOACCESS). Refused with E_INVALIDARG:
 * PAGE_WRITECOPY, PAGE_EXECUTE_WRITECOPY (not valid for VirtualAlloc; no copy-on-write for private
 * memory here), PAGE_GUARD (Linux has no one-shot guard pages), PAGE_TARGETS_*, unknown bits.
 * On S_OK stores the code in *code.
 */
HRESULT mb_win32_check_protect(DWORD protect, uint8_t *code);

/* PAGE_* value of a protection code. */
DWORD mb_win32_protect_of(uint8_t code);

/* mmap/mprotect PROT_* flags of a protection code. */
int mb_win32_prot_flags(uint8_t code);

/* The operation a VirtualAlloc allocation_type asks for. */
typedef enum mb_alloc_op {
	MB_ALLOC_RESERVE,	 /* MEM_RESERVE */
	MB_ALLOC_COMMIT,	 /* MEM_COMMIT at an address (already reserved) */
	MB_ALLOC_RESERVE_COMMIT, /* MEM_RESERVE|MEM_COMMIT, or MEM_COMMIT with a NULL address */
	MB_ALLOC_RESET,		 /* MEM_RESET */
	MB_ALLOC_RESET_UNDO,	 /* MEM_RESET_UNDO */
} mb_alloc_op;

/*
 * Checks VirtualAlloc's arguments (not the address state): allocation_type, protect, level, size.
 * MEM_TOP_DOWN is accepted as a hint; MEM_LARGE_PAGES, MEM_PHYSICAL, MEM_WRITE_WATCH are refused
 * (E_INVALIDARG). MEM_RESET / MEM_RESET_UNDO must stand alone and need a non-NULL address. size 0
 * is E_INVALIDARG. On S_OK: *op and the protection *code.
 */
HRESULT mb_win32_check_alloc(uintptr_t address, size_t size, DWORD allocation_type, DWORD protect,
			     int level, mb_alloc_op *op, uint8_t *code);

/* Checks an EMemoryCriticalLevel value. */
HRESULT mb_win32_check_level(int level);

/*
 * Plans a reservation: base = address rounded down to 64 KiB (address NULL: base 0, the caller
 * picks one), size = pages covering [address, address+size) (NULL: size rounded up to a page).
 * E_INVALIDARG when the range wraps or leaves [MB_ADDRESS_MIN, MB_ADDRESS_LIMIT), or size is
 * absurd.
 */
HRESULT mb_win32_plan_reserve(uintptr_t address, size_t size, uintptr_t *base, size_t *region_size);

/* A run of pages inside one region. */
typedef struct mb_page_range {
	mb_region *region;
	uintptr_t start; /* page aligned */
	size_t first;	 /* page index in region */
	size_t count;	 /* pages, >= 1 */
} mb_page_range;

/*
 * Resolves the pages touching [address, address+size) (size >= 1) inside one region of map.
 * MB_E_INVALID_ADDRESS if any page is outside every region or the range crosses a region's end.
 * Used for commit, MEM_RESET, MEM_RESET_UNDO and VirtualProtect.
 */
HRESULT mb_win32_plan_range(const mb_regmap *map, uintptr_t address, size_t size,
			    mb_page_range *out);

/*
 * Plans MEM_RESET / MEM_RESET_UNDO: the pages touching [address, address+size) inside one region
 * (else MB_E_INVALID_ADDRESS, as for a commit), in any state. Pages that are not committed are
 * left alone: a MEM_RESET of reserved pages succeeds and changes nothing (Wine's
 * test_VirtualAlloc checks this against Windows). *committed receives how many pages of the range
 * are committed, so a caller with none has nothing to do.
 */
HRESULT mb_win32_plan_reset(const mb_regmap *map, uintptr_t address, size_t size,
			    mb_page_range *out, size_t *committed);

/*
 * Checks VirtualFree's arguments and resolves its target, in NtFreeVirtualMemory's order.
 *   free_type must be MEM_DECOMMIT or MEM_RELEASE alone (else E_INVALIDARG).
 *   MEM_RELEASE with a size != 0 is E_INVALIDARG wherever it points.
 *   address not inside any region: HOST_E_INVALIDOPERATION (memory not allocated through this
 *   client; NT's STATUS_MEMORY_NOT_ALLOCATED).
 *   size 0 (MEM_RELEASE, or MEM_DECOMMIT of the whole region) only at the region's base, else
 *   MB_E_INVALID_ADDRESS (STATUS_FREE_VM_NOT_AT_BASE); *out covers the whole region.
 *   MEM_DECOMMIT with a size: the pages touching the range, which must end inside the region it
 *   starts in; past its end, over free pages or into the next region is E_INVALIDARG
 *   (STATUS_UNABLE_TO_FREE_VM, which Win32 maps to ERROR_INVALID_PARAMETER), as is a size that
 *   wraps. Uncommitted pages in the range are no error.
 */
HRESULT mb_win32_plan_free(const mb_regmap *map, uintptr_t address, size_t size, DWORD free_type,
			   mb_page_range *out);

/*
 * Fills *info for VirtualQuery at address (rounded down to a page). Inside a region: the run of
 * pages from there with the same state and protection, never crossing the region's end, Type
 * MEM_PRIVATE. Outside: MEM_FREE up to the next region (or MB_ADDRESS_LIMIT), Protect
 * PAGE_NOACCESS. E_INVALIDARG for an address at or above MB_ADDRESS_LIMIT.
 */
HRESULT mb_win32_query(const mb_regmap *map, uintptr_t address, MEMORY_BASIC_INFORMATION *info);

/*
 * Plans VirtualProtect: protection valid (mb_win32_check_protect), size >= 1, the pages inside one
 * region (MB_E_INVALID_ADDRESS), every page committed (MB_E_INVALID_ADDRESS). On S_OK: *out, the
 * new code and the first page's previous protection in *old_protect.
 */
HRESULT mb_win32_plan_protect(const mb_regmap *map, uintptr_t address, size_t size,
			      DWORD new_protect, mb_page_range *out, uint8_t *code,
			      DWORD *old_protect);

#endif /* MB_WIN32_H */
