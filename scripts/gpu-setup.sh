# gpu-setup.sh: sourced by the GPU benchmark scripts. On the project's GPU
# machine it unpacks the Vulkan loader debs carried in .gl (see the device
# README), points the loader at NVIDIA's ICD, and prints the card.
if compgen -G ".gl/*.deb" >/dev/null; then
	for f in .gl/*.deb; do dpkg -x "$f" /; done
	ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -e "$icd" ] && export VK_DRIVER_FILES=${VK_DRIVER_FILES:-$icd}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
return 0
