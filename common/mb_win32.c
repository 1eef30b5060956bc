/*
 * mb_win32.c: the Win32 virtual-memory rules (see mb_win32.h and hosting-api.md section 4).
 *
 * Every function writes its outputs only on S_OK. Address arithmetic is done on last bytes
 * (address + size - 1) after an explicit overflow check, so hostile sizes near SIZE_MAX and
 * addresses near UINTPTR_MAX are refused instead of wrapping into a valid-looking range.
 */
#include "mb_win32.h"

#include <sys/mman.h>

/*
 * Protection code: bits 0-2 = log2 of the base PAGE_* value (PAGE_NOACCESS 0x01 -> 0 ...
 * PAGE_EXECUTE_WRITECOPY 0x80 -> 7), bit 3 = PAGE_NOCACHE, bit 4 = PAGE_WRITECOMBINE. Zeroed arrays
 * therefore read as PAGE_NOACCESS, which is harmless: codes only mean something on committed pages.
 */
#define CODE_BASE_MASK	  0x07
#define CODE_NOCACHE	  0x08
#define CODE_WRITECOMBINE 0x10

#define PAGE_BASE_MASK 0xffu

#define ALLOC_KNOWN (MEM_COMMIT | MEM_RESERVE | MEM_RESET | MEM_RESET_UNDO | MEM_TOP_DOWN)

static uintptr_t page_down(uintptr_t a)
{
	return a & ~(uintptr_t)(MB_PAGE_SIZE - 1);
}

HRESULT mb_win32_check_protect(DWORD protect, uint8_t *code)
{
	DWORD base = protect & PAGE_BASE_MASK;
	DWORD mods = protect & ~PAGE_BASE_MASK;
	uint8_t c;

	if (!code)
		return E_POINTER;
	/* Anything beyond NOCACHE/WRITECOMBINE (PAGE_GUARD, PAGE_TARGETS_*, unknown) is refused. */
	if (mods & ~(DWORD)(PAGE_NOCACHE | PAGE_WRITECOMBINE))
		return E_INVALIDARG;
	if (mods == (PAGE_NOCACHE | PAGE_WRITECOMBINE))
		return E_INVALIDARG;
	/* Exactly one base bit. */
	if (base == 0 || (base & (base - 1)) != 0)
		return E_INVALIDARG;
	if (base == PAGE_WRITECOPY || base == PAGE_EXECUTE_WRITECOPY)
		return E_INVALIDARG;
	if (base == PAGE_NOACCESS && mods)
		return E_INVALIDARG;

	c = (uint8_t)__builtin_ctz(base);
	if (mods & PAGE_NOCACHE)
		c |= CODE_NOCACHE;
	if (mods & PAGE_WRITECOMBINE)
		c |= CODE_WRITECOMBINE;
	*code = c;
	return S_OK;
}

DWORD mb_win32_protect_of(uint8_t code)
{
	DWORD p = (DWORD)1 << (code & CODE_BASE_MASK);

	if (code & CODE_NOCACHE)
		p |= PAGE_NOCACHE;
	if (code & CODE_WRITECOMBINE)
		p |= PAGE_WRITECOMBINE;
	return p;
}

int mb_win32_prot_flags(uint8_t code)
{
	switch ((DWORD)1 << (code & CODE_BASE_MASK)) {
	case PAGE_READONLY:
		return PROT_READ;
	case PAGE_READWRITE:
	case PAGE_WRITECOPY: /* never produced by check_protect; private memory has no COW */
		return PROT_READ | PROT_WRITE;
	case PAGE_EXECUTE:
		/*
		 * Execute-only is not something x86 page tables can express without protection
		 * keys, and the kernel silently grants read anyway; asking for it explicitly keeps
		 * the mapping's reported flags honest.
		 */
		return PROT_READ | PROT_EXEC;
	case PAGE_EXECUTE_READ:
		return PROT_READ | PROT_EXEC;
	case PAGE_EXECUTE_READWRITE:
	case PAGE_EXECUTE_WRITECOPY:
		return PROT_READ | PROT_WRITE | PROT_EXEC;
	case PAGE_NOACCESS:
	default:
		return PROT_NONE;
	}
}

HRESULT mb_win32_check_level(int level)
{
	return level >= eTaskCritical && level <= eProcessCritical ? S_OK : E_INVALIDARG;
}

HRESULT mb_win32_check_alloc(uintptr_t address, size_t size, DWORD allocation_type, DWORD protect,
			     int level, mb_alloc_op *op, uint8_t *code)
{
	DWORD kind = allocation_type & ~(DWORD)MEM_TOP_DOWN;
	mb_alloc_op o;
	uint8_t c;
	HRESULT hr;

	if (!op || !code)
		return E_POINTER;
	/* Also refuses MEM_LARGE_PAGES, MEM_PHYSICAL and MEM_WRITE_WATCH. */
	if (allocation_type & ~(DWORD)ALLOC_KNOWN)
		return E_INVALIDARG;
	if (size == 0)
		return E_INVALIDARG;
	hr = mb_win32_check_level(level);
	if (FAILED(hr))
		return hr;
	/* Checked for MEM_RESET too: Windows ignores the value there but still requires it valid.
	 */
	hr = mb_win32_check_protect(protect, &c);
	if (FAILED(hr))
		return hr;

	if (allocation_type & (MEM_RESET | MEM_RESET_UNDO)) {
		/* "Cannot be used with any other value": not even the MEM_TOP_DOWN hint. */
		if (allocation_type != MEM_RESET && allocation_type != MEM_RESET_UNDO)
			return E_INVALIDARG;
		if (address == 0)
			return E_INVALIDARG;
		o = allocation_type == MEM_RESET ? MB_ALLOC_RESET : MB_ALLOC_RESET_UNDO;
	} else if (kind == (MEM_COMMIT | MEM_RESERVE)) {
		o = MB_ALLOC_RESERVE_COMMIT;
	} else if (kind == MEM_RESERVE) {
		o = MB_ALLOC_RESERVE;
	} else if (kind == MEM_COMMIT) {
		o = address == 0 ? MB_ALLOC_RESERVE_COMMIT : MB_ALLOC_COMMIT;
	} else {
		return E_INVALIDARG; /* none of COMMIT/RESERVE/RESET/RESET_UNDO */
	}
	*op = o;
	*code = c;
	return S_OK;
}

HRESULT mb_win32_plan_reserve(uintptr_t address, size_t size, uintptr_t *base, size_t *region_size)
{
	uintptr_t b, end;

	if (!base || !region_size)
		return E_POINTER;
	/* Bounding size first makes every sum below fit: address < 2^47 and size < 2^47. */
	if (size == 0 || size >= MB_ADDRESS_LIMIT)
		return E_INVALIDARG;
	if (address == 0) {
		size_t rs = (size + MB_PAGE_SIZE - 1) & ~(MB_PAGE_SIZE - 1);

		/* Larger than the whole usable space: no base the caller picks can hold it. */
		if (rs > MB_ADDRESS_LIMIT - MB_ADDRESS_MIN)
			return E_INVALIDARG;
		*base = 0;
		*region_size = rs;
		return S_OK;
	}
	if (address >= MB_ADDRESS_LIMIT)
		return E_INVALIDARG;
	b = address & ~(uintptr_t)(MB_GRANULARITY - 1);
	if (b < MB_ADDRESS_MIN)
		return E_INVALIDARG;
	end = (address + size + MB_PAGE_SIZE - 1) & ~(uintptr_t)(MB_PAGE_SIZE - 1);
	/* MB_ADDRESS_LIMIT is 64 KiB aligned, so the span's end stays inside it too. */
	if (end > MB_ADDRESS_LIMIT)
		return E_INVALIDARG;
	*base = b;
	*region_size = end - b;
	return S_OK;
}

HRESULT mb_win32_plan_range(const mb_regmap *map, uintptr_t address, size_t size,
			    mb_page_range *out)
{
	mb_region *r;
	uintptr_t last, start;

	if (!out)
		return E_POINTER;
	if (!map || size == 0)
		return E_INVALIDARG;
	if (size - 1 > UINTPTR_MAX - address)
		return MB_E_INVALID_ADDRESS;
	last = address + (size - 1);
	r = mb_regmap_find(map, address);
	if (!r || last - r->base >= r->size)
		return MB_E_INVALID_ADDRESS;
	start = page_down(address);
	out->region = r;
	out->start = start;
	out->first = mb_region_page(r, start);
	out->count = ((page_down(last) - start) >> MB_PAGE_SHIFT) + 1;
	return S_OK;
}

HRESULT mb_win32_plan_free(const mb_regmap *map, uintptr_t address, size_t size, DWORD free_type,
			   mb_page_range *out)
{
	mb_region *r;
	uintptr_t last, start;

	if (!out)
		return E_POINTER;
	if (!map)
		return E_INVALIDARG;
	if (free_type != MEM_DECOMMIT && free_type != MEM_RELEASE)
		return E_INVALIDARG;
	/* An argument error, so it is reported before the address is looked at. */
	if (free_type == MEM_RELEASE && size != 0)
		return E_INVALIDARG;
	r = mb_regmap_find(map, address);
	if (!r)
		return HOST_E_INVALIDOPERATION;

	if (size == 0) {
		/* MEM_RELEASE, or MEM_DECOMMIT of the whole region: both only from the base. */
		if (address != r->base)
			return MB_E_INVALID_ADDRESS;
		out->region = r;
		out->start = r->base;
		out->first = 0;
		out->count = r->size >> MB_PAGE_SHIFT;
		return S_OK;
	}
	/* A range that does not end inside the reservation it starts in (past its end, over free
	 * pages or into the next reservation) is NT's STATUS_UNABLE_TO_FREE_VM, which Win32 maps
	 * to ERROR_INVALID_PARAMETER; a wrapping size likewise. */
	if (size - 1 > UINTPTR_MAX - address)
		return E_INVALIDARG;
	last = address + (size - 1);
	if (last - r->base >= r->size)
		return E_INVALIDARG;
	start = page_down(address);
	out->region = r;
	out->start = start;
	out->first = mb_region_page(r, start);
	out->count = ((page_down(last) - start) >> MB_PAGE_SHIFT) + 1;
	return S_OK;
}

HRESULT mb_win32_plan_reset(const mb_regmap *map, uintptr_t address, size_t size,
			    mb_page_range *out, size_t *committed)
{
	mb_page_range range;
	HRESULT hr;

	if (!out || !committed)
		return E_POINTER;
	hr = mb_win32_plan_range(map, address, size, &range);
	if (FAILED(hr))
		return hr;
	*committed = mb_region_committed_in(range.region, range.first, range.count);
	*out = range;
	return S_OK;
}

/*
 * What VirtualQuery reports for committed pages of a region that does not track protections (the
 * broker's maps): the reservation's protection, the best the map knows.
 */
static DWORD committed_protect(const mb_region *r, size_t page)
{
	return r->track_protect ? mb_win32_protect_of(mb_region_prot(r, page)) : r->alloc_protect;
}

HRESULT mb_win32_query(const mb_regmap *map, uintptr_t address, MEMORY_BASIC_INFORMATION *info)
{
	mb_region *r;
	uintptr_t page, end;
	size_t i, j;
	bool committed;

	if (!info)
		return E_POINTER;
	if (!map || address >= MB_ADDRESS_LIMIT)
		return E_INVALIDARG;
	page = page_down(address);
	r = mb_regmap_find(map, page);

	if (!r) {
		/* Free, including the unusable tail of a region's 64 KiB span, as Windows reports
		 * it. */
		r = mb_regmap_next_after(map, page);
		end = r && r->base < MB_ADDRESS_LIMIT ? r->base : MB_ADDRESS_LIMIT;
		info->BaseAddress = (PVOID)page;
		info->AllocationBase = NULL;
		info->AllocationProtect = 0;
		info->RegionSize = end - page;
		info->State = MEM_FREE;
		info->Protect = PAGE_NOACCESS;
		info->Type = 0;
		return S_OK;
	}

	i = mb_region_page(r, page);
	committed = mb_region_state(r, i) & MB_PAGE_COMMITTED;
	j = mb_region_query_run(r, i);
	info->BaseAddress = (PVOID)page;
	info->AllocationBase = (PVOID)r->base;
	info->AllocationProtect = r->alloc_protect;
	info->RegionSize = (j - i) << MB_PAGE_SHIFT;
	info->State = committed ? MEM_COMMIT : MEM_RESERVE;
	info->Protect = committed ? committed_protect(r, i) : 0;
	info->Type = MEM_PRIVATE;
	return S_OK;
}

HRESULT mb_win32_plan_protect(const mb_regmap *map, uintptr_t address, size_t size,
			      DWORD new_protect, mb_page_range *out, uint8_t *code,
			      DWORD *old_protect)
{
	mb_page_range range;
	uint8_t c;
	HRESULT hr;

	if (!out || !code || !old_protect)
		return E_POINTER;
	if (!map || size == 0)
		return E_INVALIDARG;
	hr = mb_win32_check_protect(new_protect, &c);
	if (FAILED(hr))
		return hr;
	hr = mb_win32_plan_range(map, address, size, &range);
	if (FAILED(hr))
		return hr;
	if (mb_region_committed_in(range.region, range.first, range.count) != range.count)
		return MB_E_INVALID_ADDRESS;
	*old_protect = committed_protect(range.region, range.first);
	*out = range;
	*code = c;
	return S_OK;
}
