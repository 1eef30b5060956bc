/*
 * creds.h: what the broker may believe about a peer beyond SO_PEERCRED's uid and gid.
 */
#ifndef MB_CREDS_H
#define MB_CREDS_H

#include <sys/types.h>

/*
 * Supplementary groups of process pid from /proc/<pid>/status, provided its real and effective uid
 * are still uid (so a pid since reused by another user's process is not believed). Returns how
 * many were stored in groups (at most max), or -1.
 */
int mb_proc_groups(pid_t pid, uid_t uid, gid_t *groups, int max);

#endif
