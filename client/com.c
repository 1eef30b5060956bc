/*
 * com.c: IHostMemoryManager, the COM-shaped face of an mb_client (mscoree.h C layout).
 *
 * The object is a small heap block whose first member is the vtable pointer, as COM requires. It
 * holds a reference on its client, so the client outlives every manager handed to a runtime.
 */
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "heap.h"

const IID mb_iid_iunknown = MB_IID_IUNKNOWN_INIT;
const IID mb_iid_ihostmemorymanager = MB_IID_IHOSTMEMORYMANAGER_INIT;
const IID mb_iid_ihostmalloc = MB_IID_IHOSTMALLOC_INIT;
const IID mb_iid_iclrmemorynotificationcallback = MB_IID_ICLRMEMORYNOTIFICATIONCALLBACK_INIT;

typedef struct host_mm {
	IHostMemoryManager iface; /* first: the pointer handed out is the object */
	atomic_uint refs;
	mb_client *client;
	pthread_mutex_t cb_lock;
	ICLRMemoryNotificationCallback *callback;
} host_mm;

static host_mm *impl(IHostMemoryManager *This)
{
	return (host_mm *)This;
}

static int iid_equal(const IID *a, const IID *b)
{
	return memcmp(a, b, sizeof(IID)) == 0;
}

static HRESULT STDMETHODCALLTYPE mm_query_interface(IHostMemoryManager *This, const IID *riid,
						    void **ppv)
{
	if (ppv == NULL)
		return E_POINTER;
	*ppv = NULL;
	if (This == NULL || riid == NULL)
		return E_INVALIDARG;
	if (!iid_equal(riid, &mb_iid_iunknown) && !iid_equal(riid, &mb_iid_ihostmemorymanager))
		return E_NOINTERFACE;
	This->lpVtbl->AddRef(This);
	*ppv = This;
	return S_OK;
}

static MB_ULONG STDMETHODCALLTYPE mm_add_ref(IHostMemoryManager *This)
{
	return atomic_fetch_add(&impl(This)->refs, 1) + 1;
}

static MB_ULONG STDMETHODCALLTYPE mm_release(IHostMemoryManager *This)
{
	host_mm *m = impl(This);
	unsigned left = atomic_fetch_sub(&m->refs, 1) - 1;

	if (left == 0) {
		if (m->callback != NULL) {
			/* The client may outlive this object: stop it calling
			 * forward_notification(m). */
			pthread_mutex_lock(&m->client->notify_lock);
			if (m->client->notify_ctx == m) {
				m->client->notify_cb = NULL;
				m->client->notify_ctx = NULL;
			}
			pthread_mutex_unlock(&m->client->notify_lock);
			m->callback->lpVtbl->Release(m->callback);
		}
		pthread_mutex_destroy(&m->cb_lock);
		mb_client_unref(m->client);
		free(m);
	}
	return left;
}

/* A heap whose blocks come from this manager's client (heap.c); E_INVALIDARG for unknown bits. */
static HRESULT STDMETHODCALLTYPE mm_create_malloc(IHostMemoryManager *This, DWORD type,
						  IHostMalloc **ppMalloc)
{
	return mb_heap_create(impl(This)->client, type, ppMalloc);
}

static HRESULT STDMETHODCALLTYPE mm_virtual_alloc(IHostMemoryManager *This, void *pAddress,
						  SIZE_T dwSize, DWORD flAllocationType,
						  DWORD flProtect, EMemoryCriticalLevel level,
						  void **ppMem)
{
	return mb_virtual_alloc(impl(This)->client, pAddress, dwSize, flAllocationType, flProtect,
				level, ppMem);
}

static HRESULT STDMETHODCALLTYPE mm_virtual_free(IHostMemoryManager *This, LPVOID lpAddress,
						 SIZE_T dwSize, DWORD dwFreeType)
{
	return mb_virtual_free(impl(This)->client, lpAddress, dwSize, dwFreeType);
}

static HRESULT STDMETHODCALLTYPE mm_virtual_query(IHostMemoryManager *This, void *lpAddress,
						  void *lpBuffer, SIZE_T dwLength, SIZE_T *pResult)
{
	return mb_virtual_query(impl(This)->client, lpAddress, lpBuffer, dwLength, pResult);
}

static HRESULT STDMETHODCALLTYPE mm_virtual_protect(IHostMemoryManager *This, void *lpAddress,
						    SIZE_T dwSize, DWORD flNewProtect,
						    DWORD *pflOldProtect)
{
	return mb_virtual_protect(impl(This)->client, lpAddress, dwSize, flNewProtect,
				  pflOldProtect);
}

static HRESULT STDMETHODCALLTYPE mm_get_memory_load(IHostMemoryManager *This, DWORD *pMemoryLoad,
						    SIZE_T *pAvailableBytes)
{
	return mb_get_memory_load(impl(This)->client, pMemoryLoad, pAvailableBytes);
}

static void forward_notification(EMemoryAvailable level, void *context)
{
	host_mm *m = context;
	ICLRMemoryNotificationCallback *cb;

	pthread_mutex_lock(&m->cb_lock);
	cb = m->callback;
	if (cb != NULL)
		cb->lpVtbl->AddRef(cb);
	pthread_mutex_unlock(&m->cb_lock);
	if (cb != NULL) {
		/* Called with no library lock held, as OnMemoryNotification must never block. */
		cb->lpVtbl->OnMemoryNotification(cb, level);
		cb->lpVtbl->Release(cb);
	}
}

static HRESULT STDMETHODCALLTYPE mm_register_callback(IHostMemoryManager *This,
						      ICLRMemoryNotificationCallback *pCallback)
{
	host_mm *m = impl(This);
	ICLRMemoryNotificationCallback *old;

	if (pCallback != NULL)
		pCallback->lpVtbl->AddRef(pCallback);
	pthread_mutex_lock(&m->cb_lock);
	old = m->callback;
	m->callback = pCallback;
	pthread_mutex_unlock(&m->cb_lock);
	if (old != NULL)
		old->lpVtbl->Release(old);
	return mb_register_memory_notification(m->client, pCallback ? forward_notification : NULL,
					       pCallback ? m : NULL);
}

/*
 * Address space the runtime maps by itself (mapped files, CLRMapViewOfFileEx): the broker counts it
 * per client and may refuse it by policy ([limits] client_max_mapped) with E_OUTOFMEMORY, which
 * NeedsVirtualAddressSpace passes back so that the runtime does not map.
 */
static HRESULT STDMETHODCALLTYPE mm_needs_va(IHostMemoryManager *This, LPVOID start, SIZE_T size)
{
	return mb_client_address_space(impl(This)->client, 1, start, size);
}

static HRESULT STDMETHODCALLTYPE mm_acquired_va(IHostMemoryManager *This, LPVOID start, SIZE_T size)
{
	return mb_client_address_space(impl(This)->client, 2, start, size);
}

static HRESULT STDMETHODCALLTYPE mm_released_va(IHostMemoryManager *This, LPVOID start)
{
	return mb_client_address_space(impl(This)->client, 3, start, 0);
}

static const IHostMemoryManagerVtbl mm_vtbl = {
    mm_query_interface, mm_add_ref,	      mm_release,	mm_create_malloc,
    mm_virtual_alloc,	mm_virtual_free,      mm_virtual_query, mm_virtual_protect,
    mm_get_memory_load, mm_register_callback, mm_needs_va,	mm_acquired_va,
    mm_released_va,
};

HRESULT mb_host_memory_manager(mb_client *client, IHostMemoryManager **manager)
{
	host_mm *m;
	HRESULT hr;

	if (manager == NULL)
		return mb_client_error(E_POINTER, "manager is NULL");
	*manager = NULL;
	if ((hr = mb_client_usable_or_reconnect(client)) != S_OK)
		return hr;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return mb_client_error(E_OUTOFMEMORY, "no memory for the manager");
	m->iface.lpVtbl = &mm_vtbl;
	atomic_init(&m->refs, 1);
	pthread_mutex_init(&m->cb_lock, NULL);
	mb_client_ref(client);
	m->client = client;
	*manager = &m->iface;
	return S_OK;
}
