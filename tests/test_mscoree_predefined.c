/*
 * test_mscoree_predefined.c: a program that already has the Win32 and mscoree.h names (here
 * declared the way windef.h, guiddef.h, unknwn.h and MIDL's mscoree.h declare them, under their
 * guards, with its own IID objects as INITGUID would define them) and then includes
 * <membroker.h>. It must compile with -Wall -Wextra -Werror (nothing defined twice), and its own
 * declarations must describe the library's objects: it drives the broker's IHostMemoryManager
 * through its own vtable type and its own IIDs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

/* ---- what windef.h / basetsd.h / winnt.h give ---- */
#define _WINDEF_
#define BASETYPES
typedef int32_t HRESULT;
typedef uint32_t DWORD;
typedef unsigned int ULONG;
typedef size_t SIZE_T;
typedef void *LPVOID;
typedef void *PVOID;
typedef struct _MEMORY_BASIC_INFORMATION {
	PVOID BaseAddress;
	PVOID AllocationBase;
	DWORD AllocationProtect;
	SIZE_T RegionSize;
	DWORD State;
	DWORD Protect;
	DWORD Type;
} MEMORY_BASIC_INFORMATION;
#define _MEMORY_BASIC_INFORMATION_DEFINED
#define STDMETHODCALLTYPE

/* ---- guiddef.h ---- */
#define GUID_DEFINED
typedef struct _GUID {
	uint32_t Data1;
	uint16_t Data2;
	uint16_t Data3;
	uint8_t Data4[8];
} GUID;
#define __IID_DEFINED__
typedef GUID IID;
#define _REFIID_DEFINED
#define REFIID		  const IID *
#define IsEqualGUID(a, b) (!memcmp((a), (b), sizeof(GUID)))
#define IsEqualIID(a, b)  IsEqualGUID(a, b)

/* ---- unknwn.h ---- */
#define __IUnknown_FWD_DEFINED__
typedef struct IUnknown IUnknown;
#define __IUnknown_INTERFACE_DEFINED__
extern const IID IID_IUnknown;
typedef struct IUnknownVtbl {
	HRESULT(STDMETHODCALLTYPE *QueryInterface)(IUnknown *This, REFIID riid, void **ppvObject);
	ULONG(STDMETHODCALLTYPE *AddRef)(IUnknown *This);
	ULONG(STDMETHODCALLTYPE *Release)(IUnknown *This);
} IUnknownVtbl;
struct IUnknown {
	const IUnknownVtbl *lpVtbl;
};

/* ---- mscoree.h (MIDL's C half, the interfaces this program uses) ---- */
#define __mscoree_h__
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

#define __IHostMalloc_FWD_DEFINED__
typedef struct IHostMalloc IHostMalloc;
#define __IHostMemoryManager_FWD_DEFINED__
typedef struct IHostMemoryManager IHostMemoryManager;
#define __ICLRMemoryNotificationCallback_FWD_DEFINED__
typedef struct ICLRMemoryNotificationCallback ICLRMemoryNotificationCallback;

#define __ICLRMemoryNotificationCallback_INTERFACE_DEFINED__
extern const IID IID_ICLRMemoryNotificationCallback;
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

#define __IHostMalloc_INTERFACE_DEFINED__
extern const IID IID_IHostMalloc;
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

#define __IHostMemoryManager_INTERFACE_DEFINED__
extern const IID IID_IHostMemoryManager;
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

/* The program's own IIDs, as an INITGUID translation unit defines them. */
const IID IID_IUnknown = {0x00000000, 0x0000, 0x0000, {0xC0, 0, 0, 0, 0, 0, 0, 0x46}};
const IID IID_IHostMemoryManager = {
    0x7BC698D1, 0xF9E3, 0x4460, {0x9C, 0xDE, 0xD0, 0x42, 0x48, 0xE9, 0xFA, 0x25}};
const IID IID_IHostMalloc = {
    0x1831991C, 0xCC53, 0x4A31, {0xB2, 0x18, 0x04, 0xE9, 0x10, 0x44, 0x64, 0x79}};
const IID IID_ICLRMemoryNotificationCallback = {
    0x47EB8E57, 0x0846, 0x4546, {0xAF, 0x76, 0x6F, 0x42, 0xFC, 0xFC, 0x26, 0x49}};

/* Only now the library's header: it must add its own API and nothing that clashes. */
#include "harness.h"
#include "membroker.h"

static mb_test_broker g_broker;

static void test_names_are_the_programs_own(void **state)
{
	(void)state;
	/* Still this program's objects, not aliases of the library's. */
	assert_ptr_not_equal(&IID_IHostMalloc, &mb_iid_ihostmalloc);
	assert_true(IsEqualIID(&IID_IHostMalloc, &mb_iid_ihostmalloc));
	assert_true(IsEqualIID(&IID_IHostMemoryManager, &mb_iid_ihostmemorymanager));
	assert_true(IsEqualIID(&IID_IUnknown, &mb_iid_iunknown));
	assert_true(IsEqualIID(&IID_ICLRMemoryNotificationCallback,
			       &mb_iid_iclrmemorynotificationcallback));
}

static void test_own_declarations_drive_the_library(void **state)
{
	(void)state;
	mb_client *c = NULL;
	IHostMemoryManager *mm = NULL;
	IHostMalloc *heap = NULL;
	void *p = NULL, *q = NULL;

	assert_hr(mb_connect(g_broker.address, &c), S_OK);
	assert_hr(mb_host_memory_manager(c, &mm), S_OK);
	mb_disconnect(c);
	assert_hr(mm->lpVtbl->QueryInterface(mm, &IID_IHostMemoryManager, &q), S_OK);
	assert_ptr_equal(q, mm);
	assert_int_equal(mm->lpVtbl->Release(mm), 1);
	assert_hr(mm->lpVtbl->VirtualAlloc(mm, NULL, 65536, MEM_RESERVE | MEM_COMMIT,
					   PAGE_READWRITE, eProcessCritical, &p),
		  S_OK);
	memset(p, 0x2a, 65536);
	assert_hr(mm->lpVtbl->VirtualFree(mm, p, 0, MEM_RELEASE), S_OK);
	assert_hr(mm->lpVtbl->CreateMalloc(mm, MALLOC_THREADSAFE, &heap), S_OK);
	assert_hr(heap->lpVtbl->QueryInterface(heap, &IID_IUnknown, &q), S_OK);
	heap->lpVtbl->Release(heap);
	assert_hr(heap->lpVtbl->Alloc(heap, 64, eTaskCritical, &q), S_OK);
	assert_hr(heap->lpVtbl->Free(heap, q), S_OK);
	heap->lpVtbl->Release(heap);
	mm->lpVtbl->Release(mm);
}

static int group_setup(void **state)
{
	(void)state;
	return mb_test_broker_start(&g_broker, (const char *const[]){"--budget", "64M", NULL});
}

static int group_teardown(void **state)
{
	(void)state;
	return mb_test_broker_stop(&g_broker);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names_are_the_programs_own),
	    cmocka_unit_test(test_own_declarations_drive_the_library),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
