/*
 * mb_hresult.c: names of the HRESULTs membroker uses, for logs, tools and mb_hresult_name().
 */
#include "membroker.h"

struct hr_name {
	HRESULT hr;
	const char *name;
};

static const struct hr_name names[] = {
    {S_OK, "S_OK"},
    {E_NOTIMPL, "E_NOTIMPL"},
    {E_NOINTERFACE, "E_NOINTERFACE"},
    {E_POINTER, "E_POINTER"},
    {E_ABORT, "E_ABORT"},
    {E_FAIL, "E_FAIL"},
    {E_UNEXPECTED, "E_UNEXPECTED"},
    {E_ACCESSDENIED, "E_ACCESSDENIED"},
    {E_HANDLE, "E_HANDLE"},
    {E_OUTOFMEMORY, "E_OUTOFMEMORY"},
    {E_INVALIDARG, "E_INVALIDARG"},
    {MB_E_INVALID_ADDRESS, "HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)"},
    {MB_E_BAD_LENGTH, "HRESULT_FROM_WIN32(ERROR_BAD_LENGTH)"},
    {HOST_E_DEADLOCK, "HOST_E_DEADLOCK"},
    {HOST_E_INTERRUPTED, "HOST_E_INTERRUPTED"},
    {HOST_E_INVALIDOPERATION, "HOST_E_INVALIDOPERATION"},
    {HOST_E_CLRNOTAVAILABLE, "HOST_E_CLRNOTAVAILABLE"},
    {HOST_E_TIMEOUT, "HOST_E_TIMEOUT"},
    {HOST_E_NOT_OWNER, "HOST_E_NOT_OWNER"},
    {HOST_E_ABANDONED, "HOST_E_ABANDONED"},
};

const char *mb_hresult_name(HRESULT hr)
{
	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].hr == hr)
			return names[i].name;
	return "unknown HRESULT";
}

/* True for the HRESULTs a broker may put in a Response; anything else is a protocol violation. */
int mb_hresult_is_wire(HRESULT hr)
{
	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].hr == hr)
			return 1;
	return 0;
}
