"""The local lab of real nodes (network + mount namespaces with sshd and containerd)."""
