"""Readers of dlib's files, below the ground floor.

:mod:`dlibfile.format` reads networks saved by dlib's DNN tools (``.dat``) without dlib: the
face-recognition ResNet (:mod:`siamese.dlib_resnet`) and the CNN face detector
(:mod:`faces.mmod`) both load through it. This package imports no other package of siamid.
"""
