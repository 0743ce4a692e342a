"""TFLite Lab: convert Keras/TensorFlow models to TFLite and prove the conversion."""
__version__ = "0.11.0"
