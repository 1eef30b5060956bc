/*
 * mb_hresult.h: HRESULT helpers shared by broker and client (mb_hresult_name is public, in
 * membroker.h).
 */
#ifndef MB_HRESULT_H
#define MB_HRESULT_H

#include "membroker.h"

/* Non-zero for the HRESULTs a broker may send in a Response. */
int mb_hresult_is_wire(HRESULT hr);

#endif
