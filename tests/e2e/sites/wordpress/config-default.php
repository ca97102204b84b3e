<?php
// The database as the deploy hands it over (roles/app, app_database_environment):
// the serving slots read WORDPRESS_DB_* and the password from a file; only the
// one-off migration gets the migrations account (WP_MIGRATE_*).
$montaiguillon_migrating = getenv('WP_MIGRATE_PASSWORD') !== false;
define('DB_NAME', getenv('WORDPRESS_DB_NAME'));
define('DB_HOST', getenv('WORDPRESS_DB_HOST'));
define('DB_USER', $montaiguillon_migrating ? getenv('WP_MIGRATE_USER') : getenv('WORDPRESS_DB_USER'));
define('DB_PASSWORD', $montaiguillon_migrating
    ? getenv('WP_MIGRATE_PASSWORD')
    : trim((string) @file_get_contents((string) getenv('WORDPRESS_DB_PASSWORD_FILE'))));
define('WP_HOME', 'https://dev.site');
define('WP_SITEURL', 'https://dev.site');
define('DISALLOW_FILE_MODS', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('DISABLE_WP_CRON', true);
// Debian's wp-config.php does the rest: WP_CONTENT_DIR in /var/lib/wordpress,
// HTTPS from the proxy's X-Forwarded-Proto, the wp_ table prefix.
