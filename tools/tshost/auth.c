/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * PAM authentication and account management, in a child process: pam_unix
 * sleeps about 2 s after a wrong password (and a PAM stack may ask the
 * network), which must not stall every other connection on the loop. The
 * child answers with one fixed-size record on a pipe and exits; the loop
 * reads it when the child is reaped.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <security/pam_appl.h>

#include "tools/tshost/tshost.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/list.h"
#include "tsfarm/log.h"

struct auth_job {
        struct server *srv;
        struct auth_job *prev, *next;
        struct conn *conn; /* NULL once abandoned */
        pid_t pid;
        int fd; /* the pipe's read end */
        sd_event_source *child;
};

/* The record the child writes. */
struct auth_record {
        int32_t stage; /* 1 authenticate, 2 account management, 3 done */
        int32_t pam_code;
        char pam_error[128];
        char user[TSHOST_USER_MAX + 1];
};

struct conv_data {
        const char *user, *password;
};

static int conv(int n, const struct pam_message **msg, struct pam_response **resp, void *appdata) {
        struct conv_data *d = appdata;
        struct pam_response *r = calloc((size_t)n, sizeof(*r));

        if (!r)
                return PAM_BUF_ERR;
        for (int i = 0; i < n; i++) {
                switch (msg[i]->msg_style) {
                case PAM_PROMPT_ECHO_OFF:
                        r[i].resp = strdup(d->password);
                        break;
                case PAM_PROMPT_ECHO_ON:
                        r[i].resp = strdup(d->user);
                        break;
                case PAM_ERROR_MSG:
                case PAM_TEXT_INFO:
                        log_debug("PAM says: %s", msg[i]->msg);
                        continue;
                default:
                        break;
                }
                if (!r[i].resp) {
                        for (int j = 0; j < i; j++) {
                                if (r[j].resp)
                                        explicit_bzero(r[j].resp, strlen(r[j].resp));
                                free(r[j].resp);
                        }
                        free(r);
                        return PAM_CONV_ERR;
                }
        }
        *resp = r;
        return PAM_SUCCESS;
}

/* In the child: close everything but stderr and the pipe. */
void tshost_child_reset(int keep_fd) {
        sigset_t all;

        sigemptyset(&all);
        (void)sigprocmask(SIG_SETMASK, &all, NULL);
        for (int sig = 1; sig < NSIG; sig++)
                if (sig != SIGKILL && sig != SIGSTOP)
                        (void)signal(sig, SIG_DFL);
        if (keep_fd > 3) {
                (void)close_range(3, (unsigned)keep_fd - 1, 0);
                (void)close_range((unsigned)keep_fd + 1, ~0U, 0);
        } else if (keep_fd == 3) {
                (void)close_range(4, ~0U, 0);
        } else {
                (void)close_range(3, ~0U, 0);
        }
}

_Noreturn static void auth_child(int fd, const char *service, const char *user, const char *password,
                                 const char *rhost) {
        struct conv_data d = {.user = user, .password = password};
        struct pam_conv c = {.conv = conv, .appdata_ptr = &d};
        struct auth_record rec = {.stage = 1};
        pam_handle_t *pamh = NULL;
        const void *item = NULL;
        int r;

        tshost_child_reset(fd);
        r = pam_start(service, user, &c, &pamh);
        if (r == PAM_SUCCESS && rhost)
                r = pam_set_item(pamh, PAM_RHOST, rhost);
        if (r == PAM_SUCCESS)
                r = pam_set_item(pamh, PAM_TTY, "tshost");
        if (r == PAM_SUCCESS)
                r = pam_authenticate(pamh, PAM_DISALLOW_NULL_AUTHTOK);
        if (r == PAM_SUCCESS) {
                rec.stage = 2;
                r = pam_acct_mgmt(pamh, PAM_DISALLOW_NULL_AUTHTOK);
        }
        if (r == PAM_SUCCESS) {
                rec.stage = 3;
                if (pam_get_item(pamh, PAM_USER, &item) == PAM_SUCCESS && item)
                        snprintf(rec.user, sizeof(rec.user), "%s", (const char *)item);
                else
                        snprintf(rec.user, sizeof(rec.user), "%s", user);
        }
        rec.pam_code = r;
        snprintf(rec.pam_error, sizeof(rec.pam_error), "%s", pam_strerror(pamh, r));
        if (pamh)
                pam_end(pamh, r);
        if (write(fd, &rec, sizeof(rec)) != (ssize_t)sizeof(rec))
                _exit(EXIT_FAILURE);
        _exit(EXIT_SUCCESS);
}

static struct auth_job *auth_job_free(struct auth_job *j) {
        if (!j)
                return NULL;
        if (j->srv)
                LIST_REMOVE(j->srv->auth_jobs, j);
        sd_event_source_disable_unref(j->child);
        safe_close(j->fd);
        free(j);
        return NULL;
}

static void verdict_of(const struct auth_record *rec, struct auth_result *res) {
        res->pam_code = rec->pam_code;
        snprintf(res->pam_error, sizeof(res->pam_error), "%.*s", (int)sizeof(rec->pam_error) - 1,
                 rec->pam_error);
        if (rec->stage == 3 && rec->pam_code == PAM_SUCCESS) {
                res->verdict = AUTH_OK;
                snprintf(res->user, sizeof(res->user), "%.*s", TSHOST_USER_MAX, rec->user);
                return;
        }
        switch (rec->pam_code) {
        case PAM_AUTH_ERR:
        case PAM_USER_UNKNOWN:
        case PAM_MAXTRIES:
        case PAM_CRED_INSUFFICIENT:
                res->verdict = rec->stage == 1 ? AUTH_WRONG_PASSWORD : AUTH_DENIED;
                return;
        case PAM_ACCT_EXPIRED:
        case PAM_PERM_DENIED:
        case PAM_NEW_AUTHTOK_REQD:
                res->verdict = AUTH_DENIED;
                return;
        default:
                res->verdict = AUTH_ERROR;
                return;
        }
}

static int on_auth_child(sd_event_source *s, const siginfo_t *si, void *userdata) {
        struct auth_job *j = userdata;
        struct auth_record rec = {};
        struct auth_result res = {.verdict = AUTH_ERROR};
        struct conn *c = j->conn;
        ssize_t n;

        n = read(j->fd, &rec, sizeof(rec));
        if (n == (ssize_t)sizeof(rec)) {
                rec.user[sizeof(rec.user) - 1] = '\0';
                rec.pam_error[sizeof(rec.pam_error) - 1] = '\0';
                verdict_of(&rec, &res);
        } else {
                snprintf(res.pam_error, sizeof(res.pam_error),
                         "the PAM process ended (%s %d) without an answer",
                         si->si_code == CLD_EXITED ? "status" : "signal", si->si_status);
        }
        auth_job_free(j);
        if (c) {
                conn_auth_done(c, &res);
                conn_kick(c);
        }
        return 0;
}

int auth_start(struct server *srv, struct conn *c, const char *user, const char *password, const char *rhost,
               struct auth_job **ret) {
        _cleanup_free_ struct auth_job *j = NULL;
        int p[2], r;

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->fd = -1;
        if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
                return negative_errno();
        j->pid = fork();
        if (j->pid < 0) {
                r = negative_errno();
                safe_close(p[0]);
                safe_close(p[1]);
                return r;
        }
        if (j->pid == 0) {
                safe_close(p[0]);
                (void)fcntl(p[1], F_SETFL, 0); /* blocking in the child */
                auth_child(p[1], srv->config->pam_service, user, password, rhost);
        }
        safe_close(p[1]);
        j->fd = p[0];
        r = sd_event_add_child(srv->event, &j->child, j->pid, WEXITED, on_auth_child, j);
        if (r < 0) {
                (void)kill(j->pid, SIGKILL);
                (void)waitpid(j->pid, NULL, 0);
                safe_close(j->fd);
                return r;
        }
        j->srv = srv;
        j->conn = c;
        LIST_PREPEND(srv->auth_jobs, j);
        *ret = TAKE_PTR(j);
        return 0;
}

void auth_job_abandon(struct auth_job *j) {
        if (j)
                j->conn = NULL;
}

void auth_jobs_free(struct server *srv) {
        while (srv->auth_jobs) {
                struct auth_job *j = srv->auth_jobs;

                (void)kill(j->pid, SIGKILL);
                (void)waitpid(j->pid, NULL, 0);
                auth_job_free(j);
        }
}
