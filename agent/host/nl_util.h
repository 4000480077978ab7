/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libnl glue for the host role's kernel plumbing (addrs.c, sockdiag.c and
 * their tests): scope-bound cleanups for libnl objects and the mapping from
 * libnl's own error codes back to errno.
 *
 * Only .c files include this; the public headers (addrs.h, sockdiag.h) stay
 * free of libnl types so their users do not need libnl's include path.
 *
 * libnl 3.7's headers compile cleanly under the project's warning flags
 * (measured with gcc 12 and clang 14), so no diagnostic pragmas are needed.
 * Note that <netlink/netlink.h> pulls in glibc's <netinet/tcp.h>, so
 * <linux/tcp.h> cannot be included next to it (see sockdiag.c).
 */
#pragma once

#include <errno.h>

#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/socket.h>

#include "tsfarm/cleanup.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct nl_sock *, nl_socket_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct nl_msg *, nlmsg_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct nl_cb *, nl_cb_put);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct nl_cache *, nl_cache_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct nl_cache_mngr *, nl_cache_mngr_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct nl_addr *, nl_addr_put);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct rtnl_addr *, rtnl_addr_put);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct rtnl_link *, rtnl_link_put);

/*
 * libnl turns errno into its own NLE_* codes (lossily: ENOBUFS and ENOMEM
 * both become NLE_NOMEM, anything unknown NLE_FAILURE). Our functions return
 * negative errno, so map back to the closest errno. Kernel errors carried in
 * NLMSG_ERROR are captured verbatim by an error callback instead, where it
 * matters (sockdiag.c), so this is only for transport-level failures.
 * Takes libnl's negative return value, returns a negative errno.
 */
static inline int errno_from_nlerr(int nlerr) {
        switch (nlerr < 0 ? -nlerr : nlerr) {
        case 0:
                return 0;
        case NLE_INTR:
                return -EINTR;
        case NLE_AGAIN:
                return -EAGAIN;
        case NLE_DUMP_INTR:
                /* The kernel's dump was inconsistent; the caller retries. */
                return -EAGAIN;
        case NLE_BAD_SOCK:
                return -EBADF;
        case NLE_EXIST:
                return -EEXIST;
        case NLE_INVAL:
                return -EINVAL;
        case NLE_RANGE:
                return -ERANGE;
        case NLE_MSGSIZE:
                return -EMSGSIZE;
        case NLE_OPNOTSUPP:
                return -EOPNOTSUPP;
        case NLE_AF_NOSUPPORT:
                return -EAFNOSUPPORT;
        case NLE_OBJ_NOTFOUND:
                return -ENOENT;
        case NLE_NOATTR:
                return -ENODATA;
        case NLE_NOMEM:
                /* Also what ENOBUFS (a netlink socket overrun) becomes. */
                return -ENOMEM;
        case NLE_NOACCESS:
                return -EACCES;
        case NLE_PERM:
                return -EPERM;
        case NLE_BUSY:
                return -EBUSY;
        case NLE_PROTO_MISMATCH:
                return -EPROTONOSUPPORT;
        case NLE_NODEV:
                return -ENODEV;
        case NLE_SEQ_MISMATCH:
        case NLE_MSG_OVERFLOW:
        case NLE_MSG_TRUNC:
        case NLE_MSG_TOOSHORT:
        case NLE_MSGTYPE_NOSUPPORT:
        case NLE_PARSE_ERR:
                return -EBADMSG;
        default:
                return -EIO;
        }
}
