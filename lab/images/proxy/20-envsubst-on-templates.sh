#!/bin/sh
# Like the official image: render ${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}/*.template
# into ${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}, substituting only the
# variables defined in the environment (so nginx's own $variables survive).
set -eu

template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"

[ -d "$template_dir" ] || exit 0
defined_envs=$(printf '${%s} ' $(env | cut -d= -f1))

find "$template_dir" -follow -type f -name "*$suffix" -print | while read -r template; do
    relative_path="${template#"$template_dir/"}"
    output_path="$output_dir/${relative_path%"$suffix"}"
    if [ ! -w "$output_dir" ]; then
        echo "$0: $output_dir is not writable, not rendering $template" >&2
        exit 0
    fi
    mkdir -p "$(dirname "$output_path")"
    echo "$0: rendering $template to $output_path"
    envsubst "$defined_envs" < "$template" > "$output_path"
done
