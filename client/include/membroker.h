/*
 * membroker.h: client API of libmembroker, the client library of the membroker memory broker.
 *
 * A process connects to membrokerd with mb_connect() and allocates virtual memory through the
 * functions below, which follow the Win32 VirtualAlloc family and the CLR hosting contract
 * (IHostMemoryManager). Every function returns an HRESULT. Memory is reserved and committed in
 * sections owned by the broker and mapped into this process, so it is used at native speed; only
 * grants and releases (commit, decommit, reserve, release, reset) cross to the broker. VirtualQuery
 * and VirtualProtect are answered locally.
 *
 * Thread safety: an mb_client may be used by any number of threads at once. A forked child cannot
 * use its parent's client: every call there returns HOST_E_CLRNOTAVAILABLE, and section mappings
 * are not inherited by the child.
 *
 * Errors (the full table is in README.md):
 *   S_OK                      success
 *   E_INVALIDARG              bad flags, protection, size, level or free type (Win32
 * ERROR_INVALID_PARAMETER) MB_E_INVALID_ADDRESS      address state conflicts (Win32
 * ERROR_INVALID_ADDRESS) E_POINTER                 a NULL out-pointer MB_E_BAD_LENGTH VirtualQuery
 * buffer shorter than MEMORY_BASIC_INFORMATION E_OUTOFMEMORY             the budget refuses
 *   HOST_E_TIMEOUT            waited for memory until the level's deadline
 *   HOST_E_ABANDONED          a wait was cancelled (broker shutting down, client disconnecting)
 *   HOST_E_CLRNOTAVAILABLE    broker unreachable, connection lost, forked child, or client disabled
 *   HOST_E_INVALIDOPERATION   VirtualFree on memory not allocated through this client
 *   HOST_E_NOT_OWNER          an operation on memory another client of this process owns
 *   E_FAIL                    protocol violation or broker failure; the client is then disabled
 */
#ifndef MEMBROKER_H
#define MEMBROKER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MB_API __attribute__((visibility("default")))
#else
#define MB_API
#endif

#define MB_VERSION_MAJOR 0
#define MB_VERSION_MINOR 1
#define MB_VERSION_PATCH 0

/* ---- Win32 types, defined only where the including program has not (windows.h, Wine, the PAL)
 * ---- */

#if !defined(_WINDEF_) && !defined(__PAL_H__) && !defined(MB_NO_WIN32_TYPES)
#ifndef _HRESULT_DEFINED
#define _HRESULT_DEFINED
typedef int32_t HRESULT;
#endif
#ifndef _DWORD_DEFINED
#define _DWORD_DEFINED
typedef uint32_t DWORD;
#endif
#ifndef _BASETSD_H_
typedef size_t SIZE_T;
#endif
typedef void *LPVOID;
typedef void *PVOID;
#endif

#ifndef GUID_DEFINED
#define GUID_DEFINED
typedef struct _GUID {
	uint32_t Data1;
	uint16_t Data2;
	uint16_t Data3;
	uint8_t Data4[8];
} GUID;
#endif
#ifndef __IID_DEFINED__
#define __IID_DEFINED__
typedef GUID IID;
#endif
/* IUnknown's reference counts (ULONG, 32 bits in every Windows data model, the PAL's and Wine's
 * LP64 headers included). MB_ULONG is the same type under a name that never collides. */
typedef uint32_t MB_ULONG;
#if !defined(_WINDEF_) && !defined(__PAL_H__) && !defined(MB_NO_WIN32_TYPES) &&                    \
    !defined(BASETYPES) && !defined(_ULONG_DEFINED)
#define _ULONG_DEFINED
typedef uint32_t ULONG;
#endif

/* guiddef.h: a reference to an IID (a pointer in C, a reference in C++), and its comparison. */
#ifndef _REFIID_DEFINED
#define _REFIID_DEFINED
#ifdef __cplusplus
#define REFIID const IID &
#else
#define REFIID const IID *
#endif
#endif
#ifndef IsEqualGUID
#ifdef __cplusplus
static inline int mb_guid_equal(const GUID &a, const GUID &b)
{
	return a.Data1 == b.Data1 && a.Data2 == b.Data2 && a.Data3 == b.Data3 &&
	       __builtin_memcmp(a.Data4, b.Data4, 8) == 0;
}
#else
static inline int mb_guid_equal(const GUID *a, const GUID *b)
{
	return a->Data1 == b->Data1 && a->Data2 == b->Data2 && a->Data3 == b->Data3 &&
	       __builtin_memcmp(a->Data4, b->Data4, 8) == 0;
}
#endif
#define IsEqualGUID(a, b) mb_guid_equal(a, b)
#endif
#ifndef IsEqualIID
#define IsEqualIID(a, b) IsEqualGUID(a, b)
#endif

/* mscoree.h's enums (its include guard is __mscoree_h__). */
#if !defined(__mscoree_h__) && !defined(__MIDL___MIDL_itf_mscoree_0000_0000_0009_DEFINED)
typedef enum {
	eTaskCritical = 0,
	eAppDomainCritical = 1,
	eProcessCritical = 2
} EMemoryCriticalLevel;

typedef enum {
	eMemoryAvailableLow = 1,
	eMemoryAvailableNeutral = 2,
	eMemoryAvailableHigh = 3
} EMemoryAvailable;

typedef enum { MALLOC_THREADSAFE = 0x1, MALLOC_EXECUTABLE = 0x2 } MALLOC_TYPE;
#endif

#ifndef _MEMORY_BASIC_INFORMATION_DEFINED
#define _MEMORY_BASIC_INFORMATION_DEFINED
/* LP64 layout: sizeof 48, RegionSize at offset 24, as in winnt.h. */
typedef struct _MEMORY_BASIC_INFORMATION {
	PVOID BaseAddress;
	PVOID AllocationBase;
	DWORD AllocationProtect;
	SIZE_T RegionSize;
	DWORD State;
	DWORD Protect;
	DWORD Type;
} MEMORY_BASIC_INFORMATION, *PMEMORY_BASIC_INFORMATION;
#endif

/* ---- Constants (values from winnt.h) ---- */

#ifndef MEM_COMMIT
#define MEM_COMMIT	0x00001000
#define MEM_RESERVE	0x00002000
#define MEM_DECOMMIT	0x00004000
#define MEM_RELEASE	0x00008000
#define MEM_FREE	0x00010000
#define MEM_PRIVATE	0x00020000
#define MEM_MAPPED	0x00040000
#define MEM_RESET	0x00080000
#define MEM_TOP_DOWN	0x00100000
#define MEM_WRITE_WATCH 0x00200000
#define MEM_PHYSICAL	0x00400000
#define MEM_RESET_UNDO	0x01000000
#define MEM_IMAGE	0x01000000
#define MEM_LARGE_PAGES 0x20000000
#endif
#ifndef MEM_COALESCE_PLACEHOLDERS
#define MEM_COALESCE_PLACEHOLDERS 0x00000001
#define MEM_PRESERVE_PLACEHOLDER  0x00000002
#endif

#ifndef PAGE_NOACCESS
#define PAGE_NOACCESS	       0x01
#define PAGE_READONLY	       0x02
#define PAGE_READWRITE	       0x04
#define PAGE_WRITECOPY	       0x08
#define PAGE_EXECUTE	       0x10
#define PAGE_EXECUTE_READ      0x20
#define PAGE_EXECUTE_READWRITE 0x40
#define PAGE_EXECUTE_WRITECOPY 0x80
#define PAGE_GUARD	       0x100
#define PAGE_NOCACHE	       0x200
#define PAGE_WRITECOMBINE      0x400
#endif
#ifndef PAGE_TARGETS_INVALID
#define PAGE_TARGETS_INVALID   0x40000000
#define PAGE_TARGETS_NO_UPDATE 0x40000000
#endif

/* ---- HRESULTs ---- */

#define MB_HR(x) ((HRESULT)(uint32_t)(x))
#ifndef S_OK
#define S_OK MB_HR(0x00000000)
#endif
#ifndef E_NOTIMPL
#define E_NOTIMPL MB_HR(0x80004001)
#endif
#ifndef E_NOINTERFACE
#define E_NOINTERFACE MB_HR(0x80004002)
#endif
#ifndef E_POINTER
#define E_POINTER MB_HR(0x80004003)
#endif
#ifndef E_ABORT
#define E_ABORT MB_HR(0x80004004)
#endif
#ifndef E_FAIL
#define E_FAIL MB_HR(0x80004005)
#endif
#ifndef E_UNEXPECTED
#define E_UNEXPECTED MB_HR(0x8000FFFF)
#endif
#ifndef E_ACCESSDENIED
#define E_ACCESSDENIED MB_HR(0x80070005)
#endif
#ifndef E_HANDLE
#define E_HANDLE MB_HR(0x80070006)
#endif
#ifndef E_OUTOFMEMORY
#define E_OUTOFMEMORY MB_HR(0x8007000E)
#endif
#ifndef E_INVALIDARG
#define E_INVALIDARG MB_HR(0x80070057)
#endif
#ifndef HOST_E_DEADLOCK
#define HOST_E_DEADLOCK			 MB_HR(0x80131020)
#define HOST_E_INTERRUPTED		 MB_HR(0x80131021)
#define HOST_E_INVALIDOPERATION		 MB_HR(0x80131022)
#define HOST_E_CLRNOTAVAILABLE		 MB_HR(0x80131023)
#define HOST_E_TIMEOUT			 MB_HR(0x80131024)
#define HOST_E_NOT_OWNER		 MB_HR(0x80131025)
#define HOST_E_ABANDONED		 MB_HR(0x80131026)
#define HOST_E_EXITPROCESS_THREADABORT	 MB_HR(0x80131027)
#define HOST_E_EXITPROCESS_ADUNLOAD	 MB_HR(0x80131028)
#define HOST_E_EXITPROCESS_TIMEOUT	 MB_HR(0x80131029)
#define HOST_E_EXITPROCESS_OUTOFMEMORY	 MB_HR(0x8013102A)
#define HOST_E_EXITPROCESS_STACKOVERFLOW MB_HR(0x8013102B)
#endif
/* HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS = 487) */
#define MB_E_INVALID_ADDRESS MB_HR(0x800701E7)
/* HRESULT_FROM_WIN32(ERROR_BAD_LENGTH = 24) */
#define MB_E_BAD_LENGTH MB_HR(0x80070018)

#ifndef SUCCEEDED
#define SUCCEEDED(hr) (((HRESULT)(hr)) >= 0)
#endif
#ifndef FAILED
#define FAILED(hr) (((HRESULT)(hr)) < 0)
#endif

/* ---- The C API ---- */

/* Protocol version this library speaks; the broker refuses clients it cannot serve. */
#define MB_PROTOCOL_VERSION 1

/* Address of the system broker, used when neither the caller nor $MEMBROKER_ADDRESS names one,
 * whatever the caller's uid (the broker and membrokerctl follow the same rule). */
#define MB_DEFAULT_ADDRESS "ipc:///run/membroker/membroker.sock"

typedef struct mb_client mb_client;

/*
 * Connects to the broker at `address` (an nng URL, ipc:// or abstract://). NULL means
 * $MEMBROKER_ADDRESS if set, else the default address. On S_OK, *client owns the connection and its
 * section; release it with mb_disconnect(). Returns HOST_E_CLRNOTAVAILABLE promptly when no broker
 * listens or the broker refuses this client (protocol version, access), E_POINTER if client is
 * NULL, E_INVALIDARG for an address that is not a local nng URL, E_OUTOFMEMORY if the library
 * cannot allocate. mb_last_error() then tells why in words.
 *
 * A client outlives its broker: its memory stays mapped and usable, and its first call after a new
 * broker listens connects again. A broker restarted through systemd's descriptor store gives it
 * its section and books back unchanged. One without them (started by hand, a lost store) gets the
 * section handed back and every reservation and committed range registered again at the critical
 * level it was committed at, booked within the budget, the levels' ceilings and the limits; a
 * range the broker refuses is punched out and becomes decommitted in this client (VirtualQuery:
 * MEM_RESERVE; its contents are gone and a touch faults, as after VirtualFree(MEM_DECOMMIT)).
 */
MB_API HRESULT mb_connect(const char *address, mb_client **client);

/*
 * Same as mb_connect(), and presents `name` to the broker (shown to operators; used for group
 * matching where the broker's policy allows it). name may be NULL; it is cut at 255 bytes.
 */
MB_API HRESULT mb_connect_named(const char *address, const char *name, mb_client **client);

/*
 * Closes the connection. The broker releases every reservation of this client; this process's
 * mappings of them are removed, so no pointer into them may be used afterwards. NULL is a no-op.
 * No other thread may be using the client during or after the call. In a forked child, frees only
 * the child's copy of the bookkeeping and never touches the parent's connection.
 */
MB_API void mb_disconnect(mb_client *client);

/*
 * VirtualAlloc. allocation_type: MEM_RESERVE, MEM_COMMIT, both, MEM_RESET or MEM_RESET_UNDO
 * (alone), optionally MEM_TOP_DOWN (a hint). protect: one PAGE_* base value, optionally
 * PAGE_NOCACHE or PAGE_WRITECOMBINE (accepted, no effect on Linux). Refused with E_INVALIDARG
 * because Linux cannot honour them: PAGE_GUARD, PAGE_WRITECOPY, PAGE_EXECUTE_WRITECOPY,
 * MEM_LARGE_PAGES, MEM_PHYSICAL, MEM_WRITE_WATCH. level is the EMemoryCriticalLevel the budget
 * arbitrates by. On S_OK, *mem is the base of the reserved region (64 KiB aligned) or the first
 * committed page; on failure *mem = NULL. Fresh commits read as zero. MEM_RESET and MEM_RESET_UNDO
 * take pages of one reservation in any state: only committed pages are affected, so a reset of
 * reserved pages succeeds and changes nothing.
 *
 * A commit of pages that are all uncommitted is usually served from the client's commit credit
 * (memory the broker granted ahead and charged already) without a round trip: it then costs one
 * mprotect. The library reports such commits to the broker later, on its own. Reservations are
 * likewise usually made from the client's reservation credit (address space granted ahead, within
 * its quotas) and reported later. MEM_RESET and commits the credit does not cover take a round
 * trip, and so may wait per level.
 */
MB_API HRESULT mb_virtual_alloc(mb_client *client, void *address, SIZE_T size,
				DWORD allocation_type, DWORD protect, EMemoryCriticalLevel level,
				void **mem);

/*
 * VirtualFree. free_type: MEM_DECOMMIT (pages touching [address, address+size); size 0 at the base
 * = the whole region) or MEM_RELEASE (address = base returned at reserve, size = 0). Decommitted
 * pages go back to the budget and read as zero when committed again. A decommit range that does
 * not end inside the reservation it starts in is E_INVALIDARG (nothing is decommitted); size 0
 * away from the base, or a release away from it, is MB_E_INVALID_ADDRESS. Releasing a reservation
 * the library has not reported to the broker yet is done locally, without a round trip.
 * Decommitting pages that were committed from credit and not yet reported is done locally, and
 * gives the credit back.
 */
MB_API HRESULT mb_virtual_free(mb_client *client, void *address, SIZE_T size, DWORD free_type);

/*
 * VirtualQuery, answered locally without a round trip. Describes the run of pages at `address` that
 * share state and protection inside one reservation of this client; addresses outside this client's
 * reservations are MEM_FREE. *written receives sizeof(MEMORY_BASIC_INFORMATION) on S_OK, 0
 * otherwise.
 */
MB_API HRESULT mb_virtual_query(mb_client *client, const void *address,
				MEMORY_BASIC_INFORMATION *info, SIZE_T length, SIZE_T *written);

/*
 * VirtualProtect, applied locally with mprotect. Every page touching [address, address+size) must
 * be committed and inside one reservation. *old_protect receives the first page's previous
 * protection.
 */
MB_API HRESULT mb_virtual_protect(mb_client *client, void *address, SIZE_T size, DWORD new_protect,
				  DWORD *old_protect);

/*
 * GetMemoryLoad: *memory_load is the percentage of the broker's budget committed (0-100);
 * *available_bytes is what this client could commit now at eTaskCritical.
 */
MB_API HRESULT mb_get_memory_load(mb_client *client, DWORD *memory_load, SIZE_T *available_bytes);

typedef void (*mb_memory_callback)(EMemoryAvailable level, void *context);

/*
 * Registers a callback for memory-pressure notifications (one per client; a later call replaces it,
 * NULL unregisters). The callback runs on a thread of the library, never under a library lock, and
 * must not block. It first receives the broker's current level, then every change (Low from 90% of
 * the budget committed or while anything waits, until below 80%; High below 50%, until 60%). When
 * this returns, the previous callback is not running and will not be called again (unless called
 * from inside that callback). The same thread reconnects an idle client after a broker restart.
 */
MB_API HRESULT mb_register_memory_notification(mb_client *client, mb_memory_callback callback,
					       void *context);

/* Figures of this client's session, as the broker keeps them (for tools and tests). */
typedef struct mb_session_status {
	uint64_t budget;	    /* bytes */
	uint64_t total_committed;   /* all clients, bytes */
	uint64_t committed;	    /* this client, bytes */
	uint64_t reserved;	    /* this client, bytes */
	uint64_t reservations;	    /* this client, count */
	uint32_t sessions;	    /* connected clients */
	uint64_t section_allocated; /* bytes the kernel allocated in this client's section */
	uint64_t mapped;	    /* address space reported through AcquiredVirtualAddressSpace */
	uint32_t waiters;	    /* commits waiting for memory, all clients */
	uint32_t pressure;	    /* EMemoryAvailable the broker reports now */
	uint64_t reclaimed; /* bytes of MEM_RESET pages discarded since the broker started */
	uint32_t offences;  /* this client's writes to memory it had not committed */
	/* Commit credit: memory this client may commit without a round trip (unused, granted by
	 * the broker and taken back under pressure), the same for all clients, and what this
	 * client has done with it since it connected (kept by the library, not the broker). */
	uint64_t credit;
	uint64_t total_credit;
	uint64_t local_commits;	  /* commits served from credit, without a round trip */
	uint64_t local_decommits; /* decommits of such pages, without a round trip */
	uint64_t syncs;		  /* round trips that reported local commits */
} mb_session_status;

/* Fills *status from the broker. Reservations this client made without a round trip are reported
 * to the broker first (one Sync), so reserved and reservations count them. */
MB_API HRESULT mb_get_session_status(mb_client *client, mb_session_status *status);

/*
 * What this client did locally and what crossed to the broker, counted by the library since
 * mb_connect (for benchmarks and tools; no round trip). Counters only grow.
 *
 *   alloc_calls, free_calls     calls of mb_virtual_alloc / mb_virtual_free on this client, any
 *                               outcome, including those made for the client's COM objects
 *                               (IHostMemoryManager::VirtualAlloc, the CreateMalloc heap)
 *   alloc_remote, free_remote   of those, the calls that sent at least one request to the broker
 *                               (the operation itself or a report it needed first); the others
 *                               were served inside the process
 *   round_trips                 every request this client sent, for any reason (also Sync,
 *                               GetMemoryLoad, status, reconnection and the notification thread's
 *                               long polls)
 *   local_commits, local_decommits, syncs   as in mb_session_status
 *   reconnects                  times the client connected again to a (new) broker
 *   local_reserves              reservations made from the reservation credit, no round trip
 *   local_releases              releases of such reservations before they were reported, no
 *                               round trip
 *
 * A call counts as remote on the thread that made it: requests another thread sends meanwhile do
 * not. Thread-safe; each counter is read atomically but the set is not one snapshot. Returns
 * E_INVALIDARG for a NULL client, E_POINTER for a NULL stats, else S_OK (also in a forked child,
 * which sees the parent's counts as of the fork).
 */
typedef struct mb_client_stats {
	uint64_t alloc_calls;
	uint64_t alloc_remote;
	uint64_t free_calls;
	uint64_t free_remote;
	uint64_t round_trips;
	uint64_t local_commits;
	uint64_t local_decommits;
	uint64_t syncs;
	uint64_t reconnects;
	uint64_t local_reserves;
	uint64_t local_releases;
} mb_client_stats;

MB_API HRESULT mb_get_client_stats(mb_client *client, mb_client_stats *stats);

/*
 * Text explaining the last failure of a call made by this thread (empty if none). The pointer stays
 * valid until this thread's next call into the library.
 */
MB_API const char *mb_last_error(void);

/* Name of an HRESULT ("E_OUTOFMEMORY"), or "unknown HRESULT" for values this library does not use.
 */
MB_API const char *mb_hresult_name(HRESULT hr);

/* ---- The COM face: IHostMemoryManager with the exact mscoree.h C layout ---- */

#ifndef STDMETHODCALLTYPE
#define STDMETHODCALLTYPE
#endif

/*
 * Each interface is guarded the way MIDL guards it in mscoree.h and unknwn.h
 * (__X_FWD_DEFINED__, __X_INTERFACE_DEFINED__), so a program that has included those headers, or
 * declares the interfaces itself under the same guards, keeps its own definitions; the layouts are
 * the same. The IID_ names stand for the library's mb_iid_ objects (same values as mscoree.h).
 */
#ifndef __IUnknown_FWD_DEFINED__
#define __IUnknown_FWD_DEFINED__
typedef struct IUnknown IUnknown;
#endif
#ifndef __IHostMalloc_FWD_DEFINED__
#define __IHostMalloc_FWD_DEFINED__
typedef struct IHostMalloc IHostMalloc;
#endif
#ifndef __IHostMemoryManager_FWD_DEFINED__
#define __IHostMemoryManager_FWD_DEFINED__
typedef struct IHostMemoryManager IHostMemoryManager;
#endif
#ifndef __ICLRMemoryNotificationCallback_FWD_DEFINED__
#define __ICLRMemoryNotificationCallback_FWD_DEFINED__
typedef struct ICLRMemoryNotificationCallback ICLRMemoryNotificationCallback;
#endif

/* IIDs from mscoree.h (IUnknown's from unknwn.h). */
#define MB_IID_IUNKNOWN_INIT                                                                       \
	{                                                                                          \
		0x00000000, 0x0000, 0x0000,                                                        \
		{                                                                                  \
			0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x46                             \
		}                                                                                  \
	}
#define MB_IID_IHOSTMEMORYMANAGER_INIT                                                             \
	{                                                                                          \
		0x7BC698D1, 0xF9E3, 0x4460,                                                        \
		{                                                                                  \
			0x9C, 0xDE, 0xD0, 0x42, 0x48, 0xE9, 0xFA, 0x25                             \
		}                                                                                  \
	}
#define MB_IID_IHOSTMALLOC_INIT                                                                    \
	{                                                                                          \
		0x1831991C, 0xCC53, 0x4A31,                                                        \
		{                                                                                  \
			0xB2, 0x18, 0x04, 0xE9, 0x10, 0x44, 0x64, 0x79                             \
		}                                                                                  \
	}
#define MB_IID_ICLRMEMORYNOTIFICATIONCALLBACK_INIT                                                 \
	{                                                                                          \
		0x47EB8E57, 0x0846, 0x4546,                                                        \
		{                                                                                  \
			0xAF, 0x76, 0x6F, 0x42, 0xFC, 0xFC, 0x26, 0x49                             \
		}                                                                                  \
	}

MB_API extern const IID mb_iid_iunknown;
MB_API extern const IID mb_iid_ihostmemorymanager;
MB_API extern const IID mb_iid_ihostmalloc;
MB_API extern const IID mb_iid_iclrmemorynotificationcallback;

#ifndef __IUnknown_INTERFACE_DEFINED__
#define __IUnknown_INTERFACE_DEFINED__
#define IID_IUnknown mb_iid_iunknown
typedef struct IUnknownVtbl {
	HRESULT(STDMETHODCALLTYPE *QueryInterface)(IUnknown *This, REFIID riid, void **ppvObject);
	ULONG(STDMETHODCALLTYPE *AddRef)(IUnknown *This);
	ULONG(STDMETHODCALLTYPE *Release)(IUnknown *This);
} IUnknownVtbl;
struct IUnknown {
	const IUnknownVtbl *lpVtbl;
};
#ifdef COBJMACROS
#define IUnknown_QueryInterface(This, riid, ppv) ((This)->lpVtbl->QueryInterface(This, riid, ppv))
#define IUnknown_AddRef(This)			 ((This)->lpVtbl->AddRef(This))
#define IUnknown_Release(This)			 ((This)->lpVtbl->Release(This))
#endif
#endif

#ifndef __ICLRMemoryNotificationCallback_INTERFACE_DEFINED__
#define __ICLRMemoryNotificationCallback_INTERFACE_DEFINED__
#define IID_ICLRMemoryNotificationCallback mb_iid_iclrmemorynotificationcallback
typedef struct ICLRMemoryNotificationCallbackVtbl {
	HRESULT(STDMETHODCALLTYPE *QueryInterface)
	(ICLRMemoryNotificationCallback *This, REFIID riid, void **ppvObject);
	ULONG(STDMETHODCALLTYPE *AddRef)(ICLRMemoryNotificationCallback *This);
	ULONG(STDMETHODCALLTYPE *Release)(ICLRMemoryNotificationCallback *This);
	HRESULT(STDMETHODCALLTYPE *OnMemoryNotification)
	(ICLRMemoryNotificationCallback *This, EMemoryAvailable eMemoryAvailable);
} ICLRMemoryNotificationCallbackVtbl;
struct ICLRMemoryNotificationCallback {
	const ICLRMemoryNotificationCallbackVtbl *lpVtbl;
};
#ifdef COBJMACROS
#define ICLRMemoryNotificationCallback_QueryInterface(This, riid, ppv)                             \
	((This)->lpVtbl->QueryInterface(This, riid, ppv))
#define ICLRMemoryNotificationCallback_AddRef(This)  ((This)->lpVtbl->AddRef(This))
#define ICLRMemoryNotificationCallback_Release(This) ((This)->lpVtbl->Release(This))
#define ICLRMemoryNotificationCallback_OnMemoryNotification(This, e)                               \
	((This)->lpVtbl->OnMemoryNotification(This, e))
#endif
#endif

#ifndef __IHostMalloc_INTERFACE_DEFINED__
#define __IHostMalloc_INTERFACE_DEFINED__
#define IID_IHostMalloc mb_iid_ihostmalloc
typedef struct IHostMallocVtbl {
	HRESULT(STDMETHODCALLTYPE *QueryInterface)
	(IHostMalloc *This, REFIID riid, void **ppvObject);
	ULONG(STDMETHODCALLTYPE *AddRef)(IHostMalloc *This);
	ULONG(STDMETHODCALLTYPE *Release)(IHostMalloc *This);
	HRESULT(STDMETHODCALLTYPE *Alloc)
	(IHostMalloc *This, SIZE_T cbSize, EMemoryCriticalLevel eCriticalLevel, void **ppMem);
	HRESULT(STDMETHODCALLTYPE *DebugAlloc)
	(IHostMalloc *This, SIZE_T cbSize, EMemoryCriticalLevel eCriticalLevel, char *pszFileName,
	 int iLineNo, void **ppMem);
	HRESULT(STDMETHODCALLTYPE *Free)(IHostMalloc *This, void *pMem);
} IHostMallocVtbl;
struct IHostMalloc {
	const IHostMallocVtbl *lpVtbl;
};
#ifdef COBJMACROS
#define IHostMalloc_QueryInterface(This, riid, ppv)                                                \
	((This)->lpVtbl->QueryInterface(This, riid, ppv))
#define IHostMalloc_AddRef(This)	  ((This)->lpVtbl->AddRef(This))
#define IHostMalloc_Release(This)	  ((This)->lpVtbl->Release(This))
#define IHostMalloc_Alloc(This, s, l, pp) ((This)->lpVtbl->Alloc(This, s, l, pp))
#define IHostMalloc_DebugAlloc(This, s, l, f, n, pp)                                               \
	((This)->lpVtbl->DebugAlloc(This, s, l, f, n, pp))
#define IHostMalloc_Free(This, p) ((This)->lpVtbl->Free(This, p))
#endif
#endif

#ifndef __IHostMemoryManager_INTERFACE_DEFINED__
#define __IHostMemoryManager_INTERFACE_DEFINED__
#define IID_IHostMemoryManager mb_iid_ihostmemorymanager
typedef struct IHostMemoryManagerVtbl {
	HRESULT(STDMETHODCALLTYPE *QueryInterface)
	(IHostMemoryManager *This, REFIID riid, void **ppvObject);
	ULONG(STDMETHODCALLTYPE *AddRef)(IHostMemoryManager *This);
	ULONG(STDMETHODCALLTYPE *Release)(IHostMemoryManager *This);
	HRESULT(STDMETHODCALLTYPE *CreateMalloc)
	(IHostMemoryManager *This, DWORD dwMallocType, IHostMalloc **ppMalloc);
	HRESULT(STDMETHODCALLTYPE *VirtualAlloc)
	(IHostMemoryManager *This, void *pAddress, SIZE_T dwSize, DWORD flAllocationType,
	 DWORD flProtect, EMemoryCriticalLevel eCriticalLevel, void **ppMem);
	HRESULT(STDMETHODCALLTYPE *VirtualFree)
	(IHostMemoryManager *This, LPVOID lpAddress, SIZE_T dwSize, DWORD dwFreeType);
	HRESULT(STDMETHODCALLTYPE *VirtualQuery)
	(IHostMemoryManager *This, void *lpAddress, void *lpBuffer, SIZE_T dwLength,
	 SIZE_T *pResult);
	HRESULT(STDMETHODCALLTYPE *VirtualProtect)
	(IHostMemoryManager *This, void *lpAddress, SIZE_T dwSize, DWORD flNewProtect,
	 DWORD *pflOldProtect);
	HRESULT(STDMETHODCALLTYPE *GetMemoryLoad)
	(IHostMemoryManager *This, DWORD *pMemoryLoad, SIZE_T *pAvailableBytes);
	HRESULT(STDMETHODCALLTYPE *RegisterMemoryNotificationCallback)
	(IHostMemoryManager *This, ICLRMemoryNotificationCallback *pCallback);
	HRESULT(STDMETHODCALLTYPE *NeedsVirtualAddressSpace)
	(IHostMemoryManager *This, LPVOID startAddress, SIZE_T size);
	HRESULT(STDMETHODCALLTYPE *AcquiredVirtualAddressSpace)
	(IHostMemoryManager *This, LPVOID startAddress, SIZE_T size);
	HRESULT(STDMETHODCALLTYPE *ReleasedVirtualAddressSpace)
	(IHostMemoryManager *This, LPVOID startAddress);
} IHostMemoryManagerVtbl;
struct IHostMemoryManager {
	const IHostMemoryManagerVtbl *lpVtbl;
};
#ifdef COBJMACROS
#define IHostMemoryManager_QueryInterface(This, riid, ppv)                                         \
	((This)->lpVtbl->QueryInterface(This, riid, ppv))
#define IHostMemoryManager_AddRef(This)		     ((This)->lpVtbl->AddRef(This))
#define IHostMemoryManager_Release(This)	     ((This)->lpVtbl->Release(This))
#define IHostMemoryManager_CreateMalloc(This, t, pp) ((This)->lpVtbl->CreateMalloc(This, t, pp))
#define IHostMemoryManager_VirtualAlloc(This, a, s, t, p, l, pp)                                   \
	((This)->lpVtbl->VirtualAlloc(This, a, s, t, p, l, pp))
#define IHostMemoryManager_VirtualFree(This, a, s, t) ((This)->lpVtbl->VirtualFree(This, a, s, t))
#define IHostMemoryManager_VirtualQuery(This, a, b, l, r)                                          \
	((This)->lpVtbl->VirtualQuery(This, a, b, l, r))
#define IHostMemoryManager_VirtualProtect(This, a, s, n, o)                                        \
	((This)->lpVtbl->VirtualProtect(This, a, s, n, o))
#define IHostMemoryManager_GetMemoryLoad(This, l, a) ((This)->lpVtbl->GetMemoryLoad(This, l, a))
#define IHostMemoryManager_RegisterMemoryNotificationCallback(This, cb)                            \
	((This)->lpVtbl->RegisterMemoryNotificationCallback(This, cb))
#define IHostMemoryManager_NeedsVirtualAddressSpace(This, a, s)                                    \
	((This)->lpVtbl->NeedsVirtualAddressSpace(This, a, s))
#define IHostMemoryManager_AcquiredVirtualAddressSpace(This, a, s)                                 \
	((This)->lpVtbl->AcquiredVirtualAddressSpace(This, a, s))
#define IHostMemoryManager_ReleasedVirtualAddressSpace(This, a)                                    \
	((This)->lpVtbl->ReleasedVirtualAddressSpace(This, a))
#endif
#endif

/*
 * Returns an IHostMemoryManager bound to `client`, with one reference owned by the caller (drop it
 * with Release). The object holds a reference on the client: mb_disconnect() of a client whose
 * manager is still referenced defers the disconnect to the last Release.
 */
MB_API HRESULT mb_host_memory_manager(mb_client *client, IHostMemoryManager **manager);

#ifdef __cplusplus
}
#endif

#endif /* MEMBROKER_H */
