/*
 * test_mscoree.c: host code written against mscoree.h's C interface, built with <membroker.h>
 * alone (no windows.h, no mscoree.h): the names such code uses (REFIID, ULONG, IUnknown,
 * IID_IUnknown, IID_IHostMemoryManager, IID_IHostMalloc, IID_ICLRMemoryNotificationCallback,
 * IsEqualIID) come from <membroker.h>, and the program runs against the real membrokerd: the
 * host's own ICLRMemoryNotificationCallback answers QueryInterface by IID, and it drives the
 * broker's IHostMemoryManager and IHostMalloc through lpVtbl only.
 *
 * test_mscoree_predefined.c is the other half: a program that already has these names.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <string.h>

#include <unistd.h>

#include "harness.h"
#include "membroker.h"

static mb_test_broker g_broker;

/* ---- the host's callback object, as a CLR host writes it in C ---- */

typedef struct host_callback {
	ICLRMemoryNotificationCallback iface; /* first: the object is its vtable pointer */
	atomic_uint refs;
	atomic_int last_level;
} host_callback;

static HRESULT STDMETHODCALLTYPE cb_query_interface(ICLRMemoryNotificationCallback *This,
						    REFIID riid, void **ppvObject)
{
	if (ppvObject == NULL)
		return E_POINTER;
	*ppvObject = NULL;
	if (!IsEqualIID(riid, &IID_IUnknown) &&
	    !IsEqualIID(riid, &IID_ICLRMemoryNotificationCallback))
		return E_NOINTERFACE;
	*ppvObject = This;
	This->lpVtbl->AddRef(This);
	return S_OK;
}

static ULONG STDMETHODCALLTYPE cb_add_ref(ICLRMemoryNotificationCallback *This)
{
	return atomic_fetch_add(&((host_callback *)This)->refs, 1) + 1;
}

static ULONG STDMETHODCALLTYPE cb_release(ICLRMemoryNotificationCallback *This)
{
	return atomic_fetch_sub(&((host_callback *)This)->refs, 1) - 1;
}

static HRESULT STDMETHODCALLTYPE cb_on_memory_notification(ICLRMemoryNotificationCallback *This,
							   EMemoryAvailable eMemoryAvailable)
{
	atomic_store(&((host_callback *)This)->last_level, (int)eMemoryAvailable);
	return S_OK;
}

static const ICLRMemoryNotificationCallbackVtbl cb_vtbl = {
    cb_query_interface,
    cb_add_ref,
    cb_release,
    cb_on_memory_notification,
};

static bool heard_level(void *arg)
{
	return atomic_load(&((host_callback *)arg)->last_level) != 0;
}

/* The values mscoree.h gives (EXTERN_GUID lines), byte for byte. */
static void test_iids_have_mscoree_values(void **state)
{
	(void)state;
	static const IID want_mm = {
	    0x7BC698D1, 0xF9E3, 0x4460, {0x9C, 0xDE, 0xD0, 0x42, 0x48, 0xE9, 0xFA, 0x25}};
	static const IID want_malloc = {
	    0x1831991C, 0xCC53, 0x4A31, {0xB2, 0x18, 0x04, 0xE9, 0x10, 0x44, 0x64, 0x79}};
	static const IID want_cb = {
	    0x47EB8E57, 0x0846, 0x4546, {0xAF, 0x76, 0x6F, 0x42, 0xFC, 0xFC, 0x26, 0x49}};
	static const IID want_unk = {
	    0x00000000, 0x0000, 0x0000, {0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x46}};
	assert_true(IsEqualIID(&IID_IHostMemoryManager, &want_mm));
	assert_true(IsEqualIID(&IID_IHostMalloc, &want_malloc));
	assert_true(IsEqualIID(&IID_ICLRMemoryNotificationCallback, &want_cb));
	assert_true(IsEqualIID(&IID_IUnknown, &want_unk));
	assert_false(IsEqualIID(&IID_IHostMalloc, &IID_IHostMemoryManager));
	assert_false(IsEqualGUID(&IID_IUnknown, &want_cb));
	assert_int_equal(sizeof(ULONG), 4);
	/* REFIID is what QueryInterface takes. */
	REFIID r = &IID_IHostMalloc;
	assert_ptr_equal(r, &IID_IHostMalloc);
}

static void test_host_drives_the_manager_through_lpvtbl(void **state)
{
	(void)state;
	mb_client *c = NULL;
	IHostMemoryManager *mm = NULL;
	IUnknown *unk = NULL;
	IHostMalloc *heap = NULL;
	void *p = NULL;

	assert_hr(mb_connect(g_broker.address, &c), S_OK);
	assert_hr(mb_host_memory_manager(c, &mm), S_OK);
	mb_disconnect(c); /* the manager keeps the client alive */

	/* QueryInterface by IID, as the CLR does through IHostControl::GetHostManager. */
	assert_hr(mm->lpVtbl->QueryInterface(mm, &IID_IUnknown, (void **)&unk), S_OK);
	assert_ptr_equal(unk, mm);
	assert_int_equal(unk->lpVtbl->Release(unk), 1);
	void *same = NULL;
	assert_hr(mm->lpVtbl->QueryInterface(mm, &IID_IHostMemoryManager, &same), S_OK);
	assert_ptr_equal(same, mm);
	ULONG refs = mm->lpVtbl->Release(mm);
	assert_int_equal(refs, 1);
	assert_hr(mm->lpVtbl->QueryInterface(mm, &IID_IHostMalloc, &same), E_NOINTERFACE);
	assert_null(same);

	/* Reserve and commit, write, query, free. */
	assert_hr(mm->lpVtbl->VirtualAlloc(mm, NULL, 1 << 20, MEM_RESERVE | MEM_COMMIT,
					   PAGE_READWRITE, eTaskCritical, &p),
		  S_OK);
	memset(p, 0x6b, 1 << 20);
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T written = 0;
	assert_hr(mm->lpVtbl->VirtualQuery(mm, p, &mbi, sizeof(mbi), &written), S_OK);
	assert_int_equal(written, sizeof(mbi));
	assert_int_equal(mbi.State, MEM_COMMIT);
	assert_hr(mm->lpVtbl->VirtualFree(mm, p, 0, MEM_RELEASE), S_OK);

	/* The heap, and its QueryInterface. */
	assert_hr(mm->lpVtbl->CreateMalloc(mm, MALLOC_THREADSAFE, &heap), S_OK);
	assert_hr(heap->lpVtbl->QueryInterface(heap, &IID_IHostMalloc, &same), S_OK);
	assert_ptr_equal(same, heap);
	heap->lpVtbl->Release(heap);
	void *blk = NULL;
	assert_hr(heap->lpVtbl->Alloc(heap, 100, eTaskCritical, &blk), S_OK);
	memset(blk, 1, 100);
	assert_hr(heap->lpVtbl->Free(heap, blk), S_OK);
	heap->lpVtbl->Release(heap);

	/* The host's own callback object, registered and called. */
	host_callback cb = {.iface = {&cb_vtbl}};
	atomic_init(&cb.refs, 1);
	atomic_init(&cb.last_level, 0);
	void *q = NULL;
	assert_hr(
	    cb.iface.lpVtbl->QueryInterface(&cb.iface, &IID_ICLRMemoryNotificationCallback, &q),
	    S_OK);
	assert_ptr_equal(q, &cb.iface);
	cb.iface.lpVtbl->Release(&cb.iface);
	assert_hr(cb.iface.lpVtbl->QueryInterface(&cb.iface, &IID_IHostMemoryManager, &q),
		  E_NOINTERFACE);
	assert_hr(mm->lpVtbl->RegisterMemoryNotificationCallback(mm, &cb.iface), S_OK);
	assert_true(mb_test_wait_for(heard_level, &cb, 20000));
	assert_hr(mm->lpVtbl->RegisterMemoryNotificationCallback(mm, NULL), S_OK);
	mm->lpVtbl->Release(mm);
}

/*
 * A heap listens for Low pressure (to trim), which starts the library's notification thread before
 * the host registers its callback; the thread learns the level and parks its long poll until the
 * level changes. The callback registered afterwards must still first receive the current level.
 * (Whatever the order, this must hold; the pause only makes the order that once lost it likely.)
 */
static void test_callback_after_heap_hears_the_level(void **state)
{
	(void)state;
	mb_client *c = NULL;
	IHostMemoryManager *mm = NULL;
	IHostMalloc *heap = NULL;

	assert_hr(mb_connect(g_broker.address, &c), S_OK);
	assert_hr(mb_host_memory_manager(c, &mm), S_OK);
	mb_disconnect(c);
	assert_hr(mm->lpVtbl->CreateMalloc(mm, MALLOC_THREADSAFE, &heap), S_OK);
	usleep(300 * 1000);
	for (int round = 0; round < 3; round++) {
		host_callback cb = {.iface = {&cb_vtbl}};
		atomic_init(&cb.refs, 1);
		atomic_init(&cb.last_level, 0);
		assert_hr(mm->lpVtbl->RegisterMemoryNotificationCallback(mm, &cb.iface), S_OK);
		assert_true(mb_test_wait_for(heard_level, &cb, 20000));
		assert_hr(mm->lpVtbl->RegisterMemoryNotificationCallback(mm, NULL), S_OK);
	}
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
	    cmocka_unit_test(test_iids_have_mscoree_values),
	    cmocka_unit_test(test_host_drives_the_manager_through_lpvtbl),
	    cmocka_unit_test(test_callback_after_heap_hears_the_level),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
