/*
 * mb_address.h: where the broker listens, shared by broker and client so both derive the same
 * names.
 *
 * The broker serves two sockets: the nng RPC socket (an ipc:// or abstract:// URL) and, beside it,
 * the companion AF_UNIX SOCK_SEQPACKET socket that hands sections (memfds) to clients, since nng
 * cannot pass file descriptors. The companion's name is the RPC socket's with ".fd" appended.
 */
#ifndef MB_ADDRESS_H
#define MB_ADDRESS_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

/* Name of the environment variable that overrides the default address, for broker and clients. */
#define MB_ADDRESS_ENV "MEMBROKER_ADDRESS"

/*
 * The one rule for where the broker listens, the same for membrokerd, the library and
 * membrokerctl, whatever the caller's uid: `given` if not NULL, else $MEMBROKER_ADDRESS if set and
 * not empty, else MB_DEFAULT_ADDRESS (the system broker, /run/membroker/membroker.sock, whose
 * directory the service unit creates). A client of any user thus finds the system broker without
 * configuration; a per-user broker is one address given to both sides (e.g. MEMBROKER_ADDRESS=
 * ipc://$XDG_RUNTIME_DIR/membroker.sock). Writes the address into buf; returns 0, or -EINVAL if it
 * is not an ipc:// or abstract:// URL or does not fit.
 */
int mb_address_resolve(const char *given, char *buf, size_t len);

/* Filesystem path of an ipc:// URL (pointer into url), or NULL for other schemes. */
const char *mb_address_ipc_path(const char *url);

/*
 * Fills *sun and *sun_len with the companion fd socket of the RPC URL. Returns 0 or -EINVAL
 * (unsupported scheme, name too long for sun_path).
 */
int mb_address_fd_socket(const char *url, struct sockaddr_un *sun, socklen_t *sun_len);

#endif
