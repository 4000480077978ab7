/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The load generator (load.c). */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#include "loadstats.h"
#include "tsclient.h"

struct tsc_load_opts {
        struct tsc_params params; /* tls, host, port, password, timeouts; user/store per connection */
        const char *store_dir;    /* DIR/<device name>/ per device */
        const char *machine_id_file;
        const char *user_prefix;   /* users are <prefix>1 .. <prefix>M */
        const char *device_prefix; /* devices are <prefix>0001 .. */
        unsigned devices, users, concurrency;
        double rate; /* connections started per second; 0: as fast as the workers go */
        usec_t duration;
        usec_t hold; /* how long a session stays attached before it ends */
        struct tsc_load_mix mix;
        bool json;
};

/* Runs the load and prints the summary to `out`. 0: every connection
 * succeeded; 1: some failed; a negative errno (logged): the run itself
 * failed (a store could not be opened, a local error). */
int tsc_load_run(const struct tsc_load_opts *o, FILE *out);
