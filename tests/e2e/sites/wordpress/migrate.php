<?php
// The deploy's migration step: install WordPress's schema on first deploy,
// upgrade it afterwards. Runs in a one-off container of the new image.
$_SERVER['HTTP_HOST'] = 'dev.site';
define('WP_INSTALLING', true);
// A test site sends no mail: WordPress's "new site" notice would call a
// sendmail the image does not have, and its complaint on stderr could come
// after our line below in the step's output. The function is pluggable
// (upgrade.php defines it only when it does not exist yet).
function wp_new_blog_notification($blog_title, $blog_url, $user_id, $deprecated = "") {
}
require '/usr/share/wordpress/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
if (is_blog_installed()) {
    wp_upgrade();
    echo "wordpress: schema upgraded\n";
} else {
    wp_install('Montaiguillon e2e', 'admin', 'admin@dev.site', false, '', wp_generate_password(24));
    echo "wordpress: installed\n";
}
