/*
 * memdiag layout probe: prints, as JSON, the sizes and member offsets of the
 * nginx structs the agent reads, for the build whose configured source tree
 * this is compiled against (see scripts/gen-layouts.sh). Member paths use C
 * syntax ("d.last", "shm.addr"). Bit-fields cannot be probed with offsetof and
 * are not listed.
 */
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>
#include <stdio.h>
#include <stddef.h>

static int first_struct = 1;
static int first_field;

static void begin(const char *name, size_t size) {
    printf("%s\n    \"%s\": { \"size\": %zu, \"fields\": {", first_struct ? "" : ",", name, size);
    first_struct = 0;
    first_field = 1;
}

static void field(const char *name, size_t off) {
    printf("%s\n      \"%s\": %zu", first_field ? "" : ",", name, off);
    first_field = 0;
}

static void end(void) { printf("\n    } }"); }

#define S(t) begin(#t, sizeof(t))
#define F(t, m) field(#m, offsetof(t, m))

int main(void) {
    printf("{\n  \"structs\": {");

    S(ngx_str_t); F(ngx_str_t, len); F(ngx_str_t, data); end();

    S(ngx_array_t);
    F(ngx_array_t, elts); F(ngx_array_t, nelts); F(ngx_array_t, size); F(ngx_array_t, nalloc); F(ngx_array_t, pool);
    end();

    S(ngx_list_part_t); F(ngx_list_part_t, elts); F(ngx_list_part_t, nelts); F(ngx_list_part_t, next); end();

    S(ngx_list_t);
    F(ngx_list_t, last); F(ngx_list_t, part); F(ngx_list_t, part.elts); F(ngx_list_t, part.nelts);
    F(ngx_list_t, part.next); F(ngx_list_t, size); F(ngx_list_t, nalloc); F(ngx_list_t, pool);
    end();

    S(ngx_pool_data_t);
    F(ngx_pool_data_t, last); F(ngx_pool_data_t, end); F(ngx_pool_data_t, next); F(ngx_pool_data_t, failed);
    end();

    S(ngx_pool_t);
    F(ngx_pool_t, d); F(ngx_pool_t, d.last); F(ngx_pool_t, d.end); F(ngx_pool_t, d.next); F(ngx_pool_t, d.failed);
    F(ngx_pool_t, max); F(ngx_pool_t, current); F(ngx_pool_t, chain); F(ngx_pool_t, large);
    F(ngx_pool_t, cleanup); F(ngx_pool_t, log);
    end();

    S(ngx_pool_large_t); F(ngx_pool_large_t, next); F(ngx_pool_large_t, alloc); end();

    S(ngx_pool_cleanup_t);
    F(ngx_pool_cleanup_t, handler); F(ngx_pool_cleanup_t, data); F(ngx_pool_cleanup_t, next);
    end();

    S(ngx_cycle_t);
    F(ngx_cycle_t, conf_ctx); F(ngx_cycle_t, pool); F(ngx_cycle_t, log); F(ngx_cycle_t, files);
    F(ngx_cycle_t, free_connections); F(ngx_cycle_t, free_connection_n); F(ngx_cycle_t, modules);
    F(ngx_cycle_t, modules_n); F(ngx_cycle_t, listening); F(ngx_cycle_t, listening.elts);
    F(ngx_cycle_t, listening.nelts); F(ngx_cycle_t, shared_memory); F(ngx_cycle_t, connection_n);
    F(ngx_cycle_t, files_n); F(ngx_cycle_t, connections); F(ngx_cycle_t, read_events);
    F(ngx_cycle_t, write_events); F(ngx_cycle_t, old_cycle); F(ngx_cycle_t, conf_file);
    F(ngx_cycle_t, conf_prefix); F(ngx_cycle_t, prefix); F(ngx_cycle_t, error_log); F(ngx_cycle_t, hostname);
    end();

    S(ngx_connection_t);
    F(ngx_connection_t, data); F(ngx_connection_t, read); F(ngx_connection_t, write); F(ngx_connection_t, fd);
    F(ngx_connection_t, listening); F(ngx_connection_t, sent); F(ngx_connection_t, log); F(ngx_connection_t, pool);
    F(ngx_connection_t, type); F(ngx_connection_t, sockaddr); F(ngx_connection_t, socklen);
    F(ngx_connection_t, addr_text); F(ngx_connection_t, buffer); F(ngx_connection_t, number);
    F(ngx_connection_t, start_time); F(ngx_connection_t, requests);
    end();

    S(ngx_listening_t);
    F(ngx_listening_t, fd); F(ngx_listening_t, sockaddr); F(ngx_listening_t, socklen);
    F(ngx_listening_t, addr_text_max_len); F(ngx_listening_t, addr_text); F(ngx_listening_t, type);
    F(ngx_listening_t, pool_size); F(ngx_listening_t, connection); F(ngx_listening_t, worker);
    end();

    S(ngx_shm_t);
    F(ngx_shm_t, addr); F(ngx_shm_t, size); F(ngx_shm_t, name); F(ngx_shm_t, log); F(ngx_shm_t, exists);
    end();

    S(ngx_shm_zone_t);
    F(ngx_shm_zone_t, data); F(ngx_shm_zone_t, shm); F(ngx_shm_zone_t, shm.addr); F(ngx_shm_zone_t, shm.size);
    F(ngx_shm_zone_t, shm.name); F(ngx_shm_zone_t, shm.exists); F(ngx_shm_zone_t, init); F(ngx_shm_zone_t, tag);
    F(ngx_shm_zone_t, sync); F(ngx_shm_zone_t, noreuse);
    end();

    S(ngx_slab_pool_t);
    F(ngx_slab_pool_t, min_size); F(ngx_slab_pool_t, min_shift); F(ngx_slab_pool_t, pages); F(ngx_slab_pool_t, last);
    F(ngx_slab_pool_t, free); F(ngx_slab_pool_t, stats); F(ngx_slab_pool_t, pfree); F(ngx_slab_pool_t, start);
    F(ngx_slab_pool_t, end); F(ngx_slab_pool_t, data); F(ngx_slab_pool_t, addr);
    end();

    S(ngx_module_t);
    F(ngx_module_t, ctx_index); F(ngx_module_t, index); F(ngx_module_t, name); F(ngx_module_t, version);
    F(ngx_module_t, signature); F(ngx_module_t, ctx); F(ngx_module_t, commands); F(ngx_module_t, type);
    end();

    S(ngx_event_conf_t);
    F(ngx_event_conf_t, connections); F(ngx_event_conf_t, use); F(ngx_event_conf_t, multi_accept);
    F(ngx_event_conf_t, accept_mutex); F(ngx_event_conf_t, name);
    end();

    S(ngx_http_conf_ctx_t);
    F(ngx_http_conf_ctx_t, main_conf); F(ngx_http_conf_ctx_t, srv_conf); F(ngx_http_conf_ctx_t, loc_conf);
    end();

    S(ngx_http_request_t);
    F(ngx_http_request_t, signature); F(ngx_http_request_t, connection); F(ngx_http_request_t, ctx);
    F(ngx_http_request_t, main_conf); F(ngx_http_request_t, srv_conf); F(ngx_http_request_t, loc_conf);
    F(ngx_http_request_t, pool); F(ngx_http_request_t, header_in); F(ngx_http_request_t, start_sec);
    F(ngx_http_request_t, start_msec); F(ngx_http_request_t, method); F(ngx_http_request_t, http_version);
    F(ngx_http_request_t, request_line); F(ngx_http_request_t, uri); F(ngx_http_request_t, args);
    F(ngx_http_request_t, main); F(ngx_http_request_t, parent);
    end();

    S(ngx_queue_t); F(ngx_queue_t, prev); F(ngx_queue_t, next); end();

#if (NGX_HTTP_V2)
    /* HTTP/2: streams hang off the connection's priority tree, not cycle->connections */
    S(ngx_http_v2_connection_t);
    F(ngx_http_v2_connection_t, connection); F(ngx_http_v2_connection_t, http_connection);
    F(ngx_http_v2_connection_t, processing); F(ngx_http_v2_connection_t, pool);
    F(ngx_http_v2_connection_t, streams_index); F(ngx_http_v2_connection_t, dependencies);
    F(ngx_http_v2_connection_t, closed);
    end();

    S(ngx_http_v2_node_t);
    F(ngx_http_v2_node_t, id); F(ngx_http_v2_node_t, index); F(ngx_http_v2_node_t, parent);
    F(ngx_http_v2_node_t, queue); F(ngx_http_v2_node_t, children); F(ngx_http_v2_node_t, stream);
    end();

    S(ngx_http_v2_stream_t);
    F(ngx_http_v2_stream_t, request); F(ngx_http_v2_stream_t, connection); F(ngx_http_v2_stream_t, node);
    F(ngx_http_v2_stream_t, pool);
    end();
#endif

    printf("\n  },\n  \"constants\": {");
    printf("\n    \"NGX_CYCLE_POOL_SIZE\": %lu,", (unsigned long) NGX_CYCLE_POOL_SIZE);
    printf("\n    \"NGX_DEFAULT_POOL_SIZE\": %lu,", (unsigned long) NGX_DEFAULT_POOL_SIZE);
    printf("\n    \"NGX_POOL_ALIGNMENT\": %lu,", (unsigned long) NGX_POOL_ALIGNMENT);
    printf("\n    \"NGX_HTTP_MODULE\": %lu,", (unsigned long) NGX_HTTP_MODULE);
    printf("\n    \"NGX_CORE_MODULE\": %lu,", (unsigned long) NGX_CORE_MODULE);
    printf("\n    \"NGX_EVENT_MODULE\": %lu,", (unsigned long) NGX_EVENT_MODULE);
    printf("\n    \"NGX_HTTP_REQUEST_SIGNATURE\": %lu,", (unsigned long) NGX_HTTP_MODULE);
    printf("\n    \"NGX_INVALID_FILE\": %ld,", (long) NGX_INVALID_FILE);
    printf("\n    \"sizeof_ptr\": %zu,", sizeof(void *));
    printf("\n    \"NGX_PTR_SIZE\": %d", NGX_PTR_SIZE);
    printf("\n  }\n}\n");
    return 0;
}
