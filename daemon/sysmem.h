/*
 * sysmem.h: how much memory the daemon can use: the smaller of MemTotal and its cgroup's limit.
 */
#ifndef MB_SYSMEM_H
#define MB_SYSMEM_H

#include <stdint.h>

/* Bytes available to this process; *source names where the figure came from. 0 if unknown. */
uint64_t mb_sysmem_available(const char **source);

#endif
