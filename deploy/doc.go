// Package deploy holds how rsttrace is run as a service: the systemd unit,
// the container image and the Kubernetes DaemonSet. Its tests check them.
package deploy
