/** The newest Kubernetes minor whose rules the validator knows; the default for --kube-version.
 * Its own module so that command help texts can name it without loading the validator. */
export const NEWEST_KUBE_VERSION = '1.34';
